"""An image's model-input fields by image id for downstream examples: from the synthetic scenes,
from a built region dataset (`regions.RegionStore`) or from a built image-file dataset
(`PixelStore`). `images(image_id)` gives `{region_features, region_boxes, region_mask}` for one
image, or, when the model reads pixels, `{pixels}` (float32 [image_size, image_size, 3], see
`pixels.py`; `images(image_id, rng)` is a training view, augmented as `config.data.augment`
says). With a `Tagger` (MVPTR's concepts, region images) each image also gives its object tags
as `tag_ids`, `tag_mask`. `check_ids` refuses, before training, a split that names an image the
store does not have.

Built images are decoded where the example is made, in the input workers; an image that no
longer decodes stops the run with `pixels.BadImage` naming the image dataset, the record, the
image id and the file it was built from. (Bad files are found when the dataset is built: they
stop the build, or are skipped and counted under `--skip_bad`.)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence

import ml_collections
import numpy as np

from semvlp_jax.data import builders, datasets, synthetic
from semvlp_jax.data.concepts import ObjectNames, scene_tags
from semvlp_jax.data.pixels import PixelTransform, decode, pixel_transform
from semvlp_jax.data.regions import RegionStore
from semvlp_jax.errors import ConfigError

REGION_FIELDS = ('region_features', 'region_boxes', 'region_mask')
Example = dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class Tagger:
    """MVPTR's tag segment of an image from its regions' object ids: their class names (`names`
    on built data; None: the synthetic scenes' shape names) through `segment` (unmasked,
    `concepts.ConceptFields.tag_segment`)."""

    segment: Callable[[Sequence[str]], Example]
    names: ObjectNames | None = None

    def __call__(self, object_labels: np.ndarray, image_id: str) -> Example:
        if self.names is None:
            return self.segment(scene_tags(object_labels))
        return self.segment(self.names.tags(object_labels, image_id))


class SyntheticImages:
    """The scenes of every split (each generated once, then kept). Image ids encode their split
    and index (synthetic.IMAGE_ID_STRIDE), as a feature file keyed by image id would."""

    def __init__(
        self,
        config: synthetic.SyntheticConfig,
        sizes: Mapping[str, int],
        pixels: tuple[PixelTransform, PixelTransform] | None = None,
        tagger: Tagger | None = None,
    ):
        """`pixels`: the (evaluation, training) transforms when the model reads pixels; the
        scenes are then rendered at their image size."""
        if pixels is not None and tagger is not None:
            raise ValueError('object tags name detector regions: pixels have none')
        self.pixels, self.tagger = pixels, tagger
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
        fields = {
            'region_features': scene['region_features'].astype(np.float32),
            'region_boxes': scene['region_boxes'].astype(np.float32),
            'region_mask': scene['region_mask'].astype(np.int32),
        }
        if self.tagger is not None:
            fields.update(self.tagger(scene['object_labels'], image_id))
        return fields

    def check_ids(self, image_ids: Iterable[str], where: str) -> None:
        """Every synthetic record names a scene of its own split: nothing to check."""


class BuiltImages:
    """The region fields a downstream example needs, from the region store."""

    def __init__(self, store: RegionStore, tagger: Tagger | None = None):
        self.store, self.tagger = store, tagger

    def __call__(self, image_id: str, rng: np.random.Generator | None = None) -> Example:
        del rng  # region features are not augmented
        fields = self.store(image_id)
        image = {key: fields[key] for key in REGION_FIELDS}
        if self.tagger is not None:
            image.update(self.tagger(fields['object_labels'], image_id))
        return image

    def check_ids(self, image_ids: Iterable[str], where: str) -> None:
        self.store.check_ids(image_ids, where)


class PixelStore:
    """`store(image_id) -> uint8 [height, width, 3]`: an image of a built `image_files` dataset,
    decoded (RGB)."""

    def __init__(self, data_dir: str, name: str):
        kind = builders.builder_class(name).KIND
        if kind != 'images':
            raise ConfigError(
                f'config.data.images={name!r} is a {kind} dataset; pixels come from an '
                "image-file dataset ('image_files', built from a folder of images)"
            )
        self.name = name
        self.source, self.index = datasets.visual_records(data_dir, name, 'image file')

    def __len__(self) -> int:
        return len(self.index)

    def check_ids(self, image_ids: Iterable, where: str) -> None:
        self.index.check_ids(image_ids, where, f'have no image in {self.name}')

    def __call__(self, image_id) -> np.ndarray:
        position = self.index.lookup(str(image_id))
        if position is None:
            raise KeyError(f'{self.name}: {self.index.why_missing(str(image_id))}')
        record = self.source[position]
        where = (
            f'{self.name} record {position} (image {record.image_id!r}, built from '
            f'{record.image_path})'
        )
        return decode(record.image, where)


class BuiltPixels:
    """The `pixels` field a downstream example needs, from the image store: the evaluation
    view, or with `rng` the training view."""

    def __init__(self, store: PixelStore, transforms: tuple[PixelTransform, PixelTransform]):
        self.store = store
        self.evaluation, self.training = transforms

    def __call__(self, image_id: str, rng: np.random.Generator | None = None) -> Example:
        image = self.store(image_id)
        if rng is None:
            return {'pixels': self.evaluation(image)}
        return {'pixels': self.training(image, rng)}

    def check_ids(self, image_ids: Iterable[str], where: str) -> None:
        self.store.check_ids(image_ids, where)


Images = SyntheticImages | BuiltImages | BuiltPixels


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


PIXELS_NEED_AN_IMAGE_DATASET = (
    "config.model.visual_input='patches' reads pixels: on built data they come from an "
    'image-file dataset; build one (python -m semvlp_jax.data.build --dataset image_files '
    "--manual_dir IMAGES --data_dir DIR) and set config.data.images='image_files'"
)


def pixel_store(data: ml_collections.ConfigDict) -> PixelStore:
    """The built image-file dataset `config.data.images`."""
    if not data.get('images'):
        raise ConfigError(PIXELS_NEED_AN_IMAGE_DATASET)
    return PixelStore(data.data_dir, data.images)


def images_of(
    config: ml_collections.ConfigDict,
    val_size: int | None = None,
    tagger: Tagger | None = None,
) -> Images:
    """The images of `config.data` in the form `config.model` reads: synthetic scenes (the train
    split, and `val_size` val scenes, default `data.num_val`), the built region dataset, or the
    built image-file dataset when the model reads pixels; region images with their tags when a
    `tagger` is given."""
    data = config.data
    transforms = pixel_transforms(config)
    if data.name == 'synthetic':
        sizes = {'train': data.num_train, 'val': val_size or data.num_val}
        scenes = synthetic.SyntheticConfig.from_data(data)
        return SyntheticImages(scenes, sizes, transforms, tagger)
    if transforms is not None:
        if tagger is not None:
            raise ValueError('object tags name detector regions: pixels have none')
        return BuiltPixels(pixel_store(data), transforms)
    return BuiltImages(region_store(data), tagger)
