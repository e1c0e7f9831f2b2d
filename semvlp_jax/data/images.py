"""An image's model-input fields by image id for downstream examples: from the synthetic scenes,
or from a built region dataset (`regions.RegionStore`). `images(image_id)` gives
`{region_features, region_boxes, region_mask}` for one image, or, when the model reads pixels,
`{pixels}` (float32 [image_size, image_size, 3], see `pixels.py`; `images(image_id, rng)` is a
training view, augmented as `config.data.augment` says). `check_ids` refuses, before training, a
split that names an image the store does not have.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import ml_collections
import numpy as np

from semvlp_jax.data import synthetic
from semvlp_jax.data.pixels import PixelTransform, pixel_transform
from semvlp_jax.data.regions import RegionStore

REGION_FIELDS = ('region_features', 'region_boxes', 'region_mask')
Example = dict[str, np.ndarray]


class SyntheticImages:
    """The scenes of every split (each generated once, then kept). Image ids encode their split
    and index (synthetic.IMAGE_ID_STRIDE), as a feature file keyed by image id would."""

    def __init__(
        self,
        config: synthetic.SyntheticConfig,
        sizes: Mapping[str, int],
        pixels: tuple[PixelTransform, PixelTransform] | None = None,
    ):
        """`pixels`: the (evaluation, training) transforms when the model reads pixels; the
        scenes are then rendered at their image size."""
        self.pixels = pixels
        if pixels is not None:
            config = synthetic.with_pixels(config, pixels[0].image_size)
        self.scenes = {
            split: synthetic.CachedScenes(synthetic.SyntheticScenes(config, split, size))
            for split, size in sizes.items()
        }

    def __call__(self, image_id: str, rng: np.random.Generator | None = None) -> Example:
        number = int(image_id)
        split = synthetic.SPLITS[number // synthetic.IMAGE_ID_STRIDE]
        scene = self.scenes[split][number % synthetic.IMAGE_ID_STRIDE]
        if self.pixels is not None:
            evaluation, training = self.pixels
            return {'pixels': (evaluation if rng is None else training)(scene['pixels'], rng)}
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

    def __call__(self, image_id: str, rng: np.random.Generator | None = None) -> Example:
        del rng  # region features are not augmented
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


def pixel_transforms(
    config: ml_collections.ConfigDict,
) -> tuple[PixelTransform, PixelTransform] | None:
    """(evaluation, training) transforms when `config.model` reads pixels, else None."""
    if config.model.visual_input != 'patches':
        return None
    size = config.model.image_size
    return pixel_transform(config.data, size, train=False), pixel_transform(
        config.data, size, train=True
    )


def images_of(config: ml_collections.ConfigDict, val_size: int | None = None) -> Images:
    """The images of `config.data` in the form `config.model` reads: synthetic scenes (the train
    split, and `val_size` val scenes, default `data.num_val`), or the built region dataset."""
    data = config.data
    if data.name == 'synthetic':
        sizes = {'train': data.num_train, 'val': val_size or data.num_val}
        scenes = synthetic.SyntheticConfig.from_data(data)
        return SyntheticImages(scenes, sizes, pixel_transforms(config))
    return BuiltImages(region_store(data))
