"""The sizes a model takes from its data rather than from the config, built in one place."""

from __future__ import annotations

import dataclasses

import ml_collections

from semvlp_jax.data import synthetic
from semvlp_jax.data.concepts import ConceptConfig


@dataclasses.dataclass(frozen=True)
class DataDims:
    vocab_size: int
    max_text_len: int
    visual_feature_dim: int
    num_object_labels: int
    num_attribute_labels: int
    num_answers: int
    images_per_example: int = 1  # NLVR2: 2 (one sentence, two images)
    # MVPTR's concepts (`config.data.concepts`; 0 without): phrase entries at the end of the
    # vocabulary (included in vocab_size), and G, the length of the tag sequence.
    num_phrases: int = 0
    max_tags: int = 0


def data_dims(
    data: ml_collections.ConfigDict,
    vocab_size: int,
    *,
    num_phrases: int | None = None,
    **overrides,
) -> DataDims:
    """The sizes of `config.data`'s input read with a `vocab_size` vocabulary (the tokenizer's);
    a task overrides what it changes (its answer count, images per example). Synthetic scenes
    label shapes and colours; built region datasets have the label counts the config gives.

    With `data.concepts` (MVPTR), `num_phrases` (the length of the run's phrase vocabulary,
    required then) phrase ids follow the words in the vocabulary, the text holds
    `data.max_text_len` word positions plus `concepts.max_phrases` phrase slots, and the tag
    sequence is `concepts.max_tags` long."""
    synthetic_data = data.name == 'synthetic'
    settings = ConceptConfig.of(data)
    if settings is None and num_phrases:
        raise ValueError(f'num_phrases={num_phrases} without config.data.concepts')
    if settings is not None and num_phrases is None:
        raise ValueError(
            'config.data.concepts is set: data_dims needs num_phrases (the length of the '
            "run's phrase vocabulary, `concepts.run_phrases`)"
        )
    concept_fields = {}
    if settings is not None:
        concept_fields = dict(num_phrases=num_phrases, max_tags=settings.max_tags)
    fields = dict(
        vocab_size=vocab_size + (num_phrases or 0),
        max_text_len=data.max_text_len + (settings.max_phrases if settings else 0),
        visual_feature_dim=data.feature_dim,
        num_object_labels=len(synthetic.SHAPES) if synthetic_data else data.num_object_labels,
        num_attribute_labels=(
            len(synthetic.COLOURS) if synthetic_data else data.num_attribute_labels
        ),
        num_answers=len(synthetic.ANSWERS),
        **concept_fields,
    )
    return DataDims(**{**fields, **overrides})
