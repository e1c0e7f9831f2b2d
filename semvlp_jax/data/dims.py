"""The sizes a model takes from its data rather than from the config, built in one place."""

from __future__ import annotations

import dataclasses

import ml_collections

from semvlp_jax.data import synthetic


@dataclasses.dataclass(frozen=True)
class DataDims:
    vocab_size: int
    max_text_len: int
    visual_feature_dim: int
    num_object_labels: int
    num_attribute_labels: int
    num_answers: int
    images_per_example: int = 1  # NLVR2: 2 (one sentence, two images)


def data_dims(data: ml_collections.ConfigDict, vocab_size: int, **overrides) -> DataDims:
    """The sizes of `config.data`'s input read with a `vocab_size` vocabulary; a task overrides
    what it changes (its answer count, images per example). Synthetic scenes label shapes and
    colours; built region datasets have the label counts the config gives."""
    synthetic_data = data.name == 'synthetic'
    fields = dict(
        vocab_size=vocab_size,
        max_text_len=data.max_text_len,
        visual_feature_dim=data.feature_dim,
        num_object_labels=len(synthetic.SHAPES) if synthetic_data else data.num_object_labels,
        num_attribute_labels=(
            len(synthetic.COLOURS) if synthetic_data else data.num_attribute_labels
        ),
        num_answers=len(synthetic.ANSWERS),
    )
    return DataDims(**{**fields, **overrides})
