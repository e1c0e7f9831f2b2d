"""Weighted loss and metric helpers shared by the objectives. All results are f32 scalars."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def weighted_mean(values: jax.Array, weights: jax.Array) -> jax.Array:
    """sum(w * v) / sum(w), and 0 when every weight is 0 (e.g. a batch with no masked token)."""
    weights = weights.astype(jnp.float32)
    return jnp.sum(values.astype(jnp.float32) * weights) / jnp.maximum(jnp.sum(weights), 1e-6)


def weighted_cross_entropy(
    logits: jax.Array, labels: jax.Array, weights: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Softmax cross-entropy and accuracy over positions with weight > 0.

    logits [..., classes]; labels [...] int (negative labels must carry weight 0).
    """
    safe_labels = jnp.maximum(labels, 0)
    losses = optax.softmax_cross_entropy_with_integer_labels(
        logits.astype(jnp.float32), safe_labels
    )
    correct = jnp.argmax(logits, axis=-1) == safe_labels
    return weighted_mean(losses, weights), weighted_mean(correct, weights)


def gather_positions(hidden: jax.Array, positions: jax.Array) -> jax.Array:
    """hidden [batch, len, dim], positions [batch, n] -> [batch, n, dim]."""
    return jnp.take_along_axis(hidden, positions[..., None], axis=1)
