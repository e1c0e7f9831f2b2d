"""Fine-tuning objectives that pre-training does not use. VQA and GQA fine-tune with `qa`
(soft VQA scores, or one-hot GQA answers), retrieval with `itm` (and `itc`)."""

from __future__ import annotations

from semvlp_jax.models.heads import PairHead
from semvlp_jax.objectives.losses import weighted_cross_entropy
from semvlp_jax.objectives.registry import register


@register('nlvr2', heads=(PairHead,))
def visual_reasoning(model, encoded, batch):
    """NLVR2: is the sentence true of the image pair? Cross-entropy on the pair head, which reads
    the pooled outputs of the sentence with each image, concatenated. Examples whose images an
    ITM negative swapped (`is_matched` 0) do not count: their label no longer holds."""
    size = batch['label'].shape[0]
    logits = model.pair_head(encoded.pooled.reshape(size, -1))
    loss, accuracy = weighted_cross_entropy(logits, batch['label'], batch['is_matched'])
    return (loss,), {'nlvr2_accuracy': accuracy}
