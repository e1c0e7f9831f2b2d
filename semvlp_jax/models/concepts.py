"""`config.model.concepts`: how MVPTR's staged mode reads its concepts and scores them.

The staged mode (models/encoder.py) runs the caption with its phrase concepts and the visual
sequence `[CLS] object tags [SEP] regions` through the uni-modal layers, then the text and the
regions through the joint layers. These settings say what crosses into the joint stage and how
the MVPTR objectives pick their pairs; they live with the model because the objectives reach
them through it (`model.concepts`).
"""

from __future__ import annotations

import dataclasses

# How `itm_hardest` picks a negative: the most similar other example by VSC similarity
# (MVPTR's), or one sampled from the softmax of those similarities (ALBEF's, an option).
HARD_NEGATIVES = ('hardest', 'sampled')


@dataclasses.dataclass(frozen=True)
class ConceptSettings:
    keep_tags: bool = False  # the tags enter the joint stage too (MVPTR's fine-tuning `use_b`)
    hard_negatives: str = 'hardest'
    # Phrase grounding (`wpg`): which joint layer's outputs (-1: the last; 0..K-1 counts from
    # the first joint layer), the hinge margin, and how many top regions a phrase picks among.
    grounding_layer: int = -1
    grounding_margin: float = 0.2
    grounding_top_k: int = 3

    @classmethod
    def from_config(cls, model) -> ConceptSettings:
        """The settings of `config.model` (defaults where `concepts` is absent)."""
        return cls(**dict(model.get('concepts') or {}))

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        return tuple(field.name for field in dataclasses.fields(cls))
