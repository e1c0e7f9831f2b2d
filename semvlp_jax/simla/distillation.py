"""Momentum distillation (ALBEF, SIMLA): targets mixed from the data's and the teacher's, and
the momentum contrastive loss over the batch plus the queues.

Every soft target is `alpha * teacher + (1 - alpha) * hard`; with alpha = 0 each loss is exactly
its hard form (tested), which is what the first steps of the alpha ramp train on.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from semvlp_jax.simla.queues import FeatureQueues

# Columns a row may not count as negatives get this added, not -inf: a row with nothing left
# would otherwise give inf, and a zero weight would not stop its NaN gradient.
EXCLUDED = -1e9
TEMPERATURE_RANGE = (0.001, 0.5)  # SIMLA clamps its learnt temperature to this


def clamp_temperature(temperature: jax.Array) -> jax.Array:
    return jnp.clip(temperature, *TEMPERATURE_RANGE)


def soft_cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """-sum(targets * log_softmax(logits)) over the last axis."""
    return -jnp.sum(targets * jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1), axis=-1)


def mixed_targets(hard: jax.Array, teacher_logits: jax.Array, alpha: jax.Array) -> jax.Array:
    """`alpha * softmax(teacher_logits) + (1 - alpha) * hard`, the teacher held constant."""
    teacher = jax.nn.softmax(jax.lax.stop_gradient(teacher_logits).astype(jnp.float32), axis=-1)
    return alpha * teacher + (1 - alpha) * hard


def momentum_contrastive(
    image: jax.Array,
    text: jax.Array,
    teacher_image: jax.Array,
    teacher_text: jax.Array,
    image_key: jax.Array,
    queues: FeatureQueues,
    temperature: jax.Array,
    alpha: jax.Array,
) -> tuple[jax.Array, jax.Array]:
    """ITC against the teacher's features of the batch and the queues: (loss [batch], the
    text-to-image accuracy [batch] within the batch and queue).

    `image`, `text` [batch, dim] are the student's unit features; `teacher_*` the teacher's of
    the same examples, which with the queues form the bank every row is contrasted with. Row i's
    positive is bank column i. Columns showing the same image as row i (another caption of it, in
    the batch or the queue) other than its own, and empty queue slots, are excluded.
    """
    batch = image.shape[0]
    bank_image = jnp.concatenate([teacher_image, queues.image]).astype(jnp.float32)
    bank_text = jnp.concatenate([teacher_text, queues.text]).astype(jnp.float32)
    bank_key = jnp.concatenate([image_key.astype(jnp.int32), queues.image_key])
    bank_valid = jnp.concatenate([jnp.ones((batch,), bool), queues.valid])
    own = jnp.arange(batch)[:, None] == jnp.arange(bank_key.shape[0])[None, :]
    same_image = image_key[:, None] == bank_key[None, :]
    excluded = jnp.where(bank_valid[None, :] & (own | ~same_image), 0.0, EXCLUDED)
    hard = own.astype(jnp.float32)
    inverse = 1.0 / temperature

    def direction(queries, teacher_queries, bank):
        logits = inverse * queries.astype(jnp.float32) @ bank.T + excluded
        teacher_logits = inverse * teacher_queries.astype(jnp.float32) @ bank.T + excluded
        return soft_cross_entropy(logits, mixed_targets(hard, teacher_logits, alpha)), logits

    image_to_text, _ = direction(image, teacher_image, bank_text)
    text_to_image, logits = direction(text, teacher_text, bank_image)
    accuracy = (jnp.argmax(logits, axis=-1) == jnp.arange(batch)).astype(jnp.float32)
    return (image_to_text + text_to_image) / 2, accuracy
