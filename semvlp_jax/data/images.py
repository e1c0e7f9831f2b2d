"""Region fields by image id for downstream examples: from the synthetic scenes, or from a built
region dataset (`regions.RegionStore`). Either way `images(image_id)` gives
`{region_features, region_boxes, region_mask}` for one image, and `check_ids` refuses, before
training, a split that names an image without features.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import ml_collections
import numpy as np

from semvlp_jax.data import synthetic
from semvlp_jax.data.regions import RegionStore

REGION_FIELDS = ('region_features', 'region_boxes', 'region_mask')
Example = dict[str, np.ndarray]


class SyntheticImages:
    """The scenes of every split (each generated once, then kept). Image ids encode their split
    and index (synthetic.IMAGE_ID_STRIDE), as a feature file keyed by image id would."""

    def __init__(self, config: synthetic.SyntheticConfig, sizes: Mapping[str, int]):
        self.scenes = {
            split: synthetic.CachedScenes(synthetic.SyntheticScenes(config, split, size))
            for split, size in sizes.items()
        }

    def __call__(self, image_id: str) -> Example:
        number = int(image_id)
        split = synthetic.SPLITS[number // synthetic.IMAGE_ID_STRIDE]
        scene = self.scenes[split][number % synthetic.IMAGE_ID_STRIDE]
        return {
            'region_features': scene['region_features'].astype(np.float32),
            'region_boxes': scene['region_boxes'].astype(np.float32),
            'region_mask': scene['region_mask'].astype(np.int32),
        }

    def check_ids(self, image_ids: Iterable[str], where: str) -> None:
        """Every synthetic record names a scene of its own split: nothing to check."""


class BuiltImages:
    """The region fields a downstream example needs, from the region store."""

    def __init__(self, store: RegionStore):
        self.store = store

    def __call__(self, image_id: str) -> Example:
        fields = self.store(image_id)
        return {key: fields[key] for key in REGION_FIELDS}

    def check_ids(self, image_ids: Iterable[str], where: str) -> None:
        self.store.check_ids(image_ids, where)


Images = SyntheticImages | BuiltImages


def region_store(data: ml_collections.ConfigDict) -> RegionStore:
    """The built region dataset `config.data.regions`, padded to `config.data.num_regions`."""
    return RegionStore(
        data.data_dir,
        data.regions,
        num_regions=data.num_regions,
        feature_dim=data.feature_dim,
        num_object_labels=data.num_object_labels,
        num_attribute_labels=data.num_attribute_labels,
    )


def images_of(data: ml_collections.ConfigDict, val_size: int | None = None) -> Images:
    """The images of `config.data`: synthetic scenes (the train split, and `val_size` val scenes,
    default `data.num_val`), or the built region dataset."""
    if data.name == 'synthetic':
        sizes = {'train': data.num_train, 'val': val_size or data.num_val}
        return SyntheticImages(synthetic.SyntheticConfig.from_data(data), sizes)
    return BuiltImages(region_store(data))
