"""Region features by image id, read from a built region dataset (`region_tsv` / `region_npz`).

Features are stored once per image; text records (captions, questions, NLVR2 statements) carry
only an image id and are joined here, in the input workers. An image keeps its first
`num_regions` boxes (detectors write them by confidence) and is zero-padded to that many, with
`region_mask` marking the real ones.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from semvlp_jax.data import datasets
from semvlp_jax.data.records import RegionRecord
from semvlp_jax.errors import ConfigError


class RegionStore:
    """`store(image_id) -> {region_features, region_boxes, region_mask, object_labels,
    attribute_labels}` for one image, padded to `num_regions`.

    Sizes that disagree with the config (`feature_dim`, the label counts) raise `ConfigError`,
    checked on the first record when the store opens and on every record read."""

    def __init__(
        self,
        data_dir: str,
        name: str,
        *,
        num_regions: int,
        feature_dim: int,
        num_object_labels: int,
        num_attribute_labels: int,
    ):
        self.name = name
        self.source, self.index = datasets.visual_records(data_dir, name, 'region features')
        self.num_regions = num_regions
        self.feature_dim = feature_dim
        self.label_limits = {'objects': num_object_labels, 'attributes': num_attribute_labels}
        if len(self.source):
            self._record(0)  # a wrong feature size fails now, not in the middle of training

    def __len__(self) -> int:
        return len(self.index)

    def check_ids(self, image_ids: Iterable, where: str) -> None:
        """Raises ValueError when any of `image_ids` (from `where`, e.g. 'vqa_v2:train') has no
        features: a question about an image nobody extracted is an error, not a blank image."""
        self.index.check_ids(image_ids, where, f'have no features in {self.name}')

    def __call__(self, image_id) -> dict[str, np.ndarray]:
        position = self.index.lookup(str(image_id))
        if position is None:
            raise KeyError(f'{self.name}: {self.index.why_missing(str(image_id))}')
        record = self._record(position)
        count = min(len(record.boxes), self.num_regions)
        fields = {
            'region_features': np.zeros((self.num_regions, self.feature_dim), np.float32),
            'region_boxes': np.zeros((self.num_regions, 4), np.float32),
            'region_mask': np.zeros(self.num_regions, np.int32),
            'object_labels': np.full(self.num_regions, -1, np.int32),
            'attribute_labels': np.full(self.num_regions, -1, np.int32),
        }
        fields['region_features'][:count] = record.features[:count]
        fields['region_boxes'][:count] = record.boxes[:count]
        fields['region_mask'][:count] = 1
        fields['object_labels'][:count] = record.objects[:count]
        fields['attribute_labels'][:count] = record.attributes[:count]
        return fields

    def _record(self, position: int) -> RegionRecord:
        record = self.source[position]
        image_id = record.image_id
        if image_id != self.index.image_ids[position]:
            raise ValueError(
                f'{self.name}: record {position} is image {image_id!r} but image_ids.txt says '
                f'{self.index.image_ids[position]!r}; rebuild the dataset with --overwrite'
            )
        dim = record.features.shape[-1]
        if dim != self.feature_dim:
            raise ConfigError(
                f'{self.name}: image {image_id!r} has {dim}-dimensional features but '
                f'config.data.feature_dim={self.feature_dim}'
            )
        for field, limit in self.label_limits.items():
            labels = getattr(record, field)
            if labels.size and labels.max() >= limit:
                key = 'num_object_labels' if field == 'objects' else 'num_attribute_labels'
                raise ConfigError(
                    f'{self.name}: image {image_id!r} has {field} label {labels.max()} but '
                    f'config.data.{key}={limit}'
                )
        return record
