"""Weighted loss and metric helpers shared by the objectives.

Means are returned as `Ratio`s (numerator and denominator, f32 scalars) rather than numbers, so
that the parts of a batch (gradient-accumulation microbatches) combine into exactly the mean over
the whole batch.
"""

from __future__ import annotations

import flax
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class Ratio:
    """A weighted mean as total / count; adding two Ratios pools their examples."""

    total: jax.Array
    count: jax.Array

    @property
    def value(self) -> jax.Array:
        """The mean, and 0 when nothing was counted (e.g. a batch with no masked token)."""
        return self.total / jnp.maximum(self.count, 1e-6)


def weighted_mean(values: jax.Array, weights: jax.Array) -> Ratio:
    """sum(w * v) / sum(w) as a Ratio."""
    weights = weights.astype(jnp.float32)
    return Ratio(jnp.sum(values.astype(jnp.float32) * weights), jnp.sum(weights))


def weighted_cross_entropy(
    logits: jax.Array, labels: jax.Array, weights: jax.Array
) -> tuple[Ratio, Ratio]:
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
