"""Image-text contrastive learning (ITC, as in ALBEF/SIMLA) on the uni-modal states.

The text [CLS] and the mean image state after the bottom L-K layers (no cross-attention) are
projected to unit vectors; each matched caption must pick out its image among the batch's
images and vice versa (symmetric InfoNCE with a learnt temperature). The similarity matrix spans
the *global* batch: under jit the batch is one sharded array, so every device's examples are
negatives for every other's. These embeddings are also the retrieval shortlist's cheap scores.
"""

from __future__ import annotations

import jax.numpy as jnp
import optax

from semvlp_jax.models.heads import ContrastiveHead
from semvlp_jax.objectives.losses import Ratio, weighted_mean
from semvlp_jax.objectives.registry import register


@register('itc', heads=(ContrastiveHead,))
def image_text_contrastive(model, encoded, batch):
    """Only matched caption pairs take part: an ITM negative's image also sits in its own row, so
    it would be a duplicate column, and questions do not describe their image."""
    head = model.contrastive_head
    loss, accuracy = symmetric_contrastive(
        head.embed_text(encoded.unimodal_text),
        head.embed_image(encoded.unimodal_image),
        head.inverse_temperature(),
        batch,
    )
    return (loss,), {'itc_accuracy': accuracy}


def symmetric_contrastive(text, image, scale, batch) -> tuple[Ratio, Ratio]:
    """Symmetric in-batch InfoNCE of unit vectors text [batch, dim] and image [batch, dim] with
    logit scale `scale`, over the matched caption rows; (loss, text-to-image accuracy)."""
    weights = batch['is_matched'].astype(jnp.float32) * (1 - batch['is_question'])
    size = weights.shape[0]
    labels = jnp.arange(size)
    # Columns of rows that take no part leave the softmax, and so do other rows of the same
    # image (another caption of it is no negative). Not -inf: a left-out row's own loss would be
    # inf, and its zero weight would not stop a NaN gradient.
    keys = batch.get('image_key', labels)
    same_image = (keys[:, None] == keys[None, :]) & (labels[:, None] != labels[None, :])
    excluded = jnp.where((weights[None, :] > 0) & ~same_image, 0.0, -1e9)
    logits = scale * text @ image.T
    text_to_image = optax.softmax_cross_entropy_with_integer_labels(logits + excluded, labels)
    image_to_text = optax.softmax_cross_entropy_with_integer_labels(logits.T + excluded, labels)
    loss = (text_to_image + image_to_text) / 2
    correct = jnp.argmax(logits + excluded, axis=-1) == labels
    return weighted_mean(loss, weights), weighted_mean(correct, weights)
