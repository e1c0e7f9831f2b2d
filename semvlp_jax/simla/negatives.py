"""Hard negatives for ITM: for each text one image and for each image one text, sampled from
the in-batch contrastive softmax (ALBEF, SIMLA) or the most similar one (MVPTR).

A negative is never the positive and never another row of the same image (two captions of one
picture are not a negative pair): those columns get probability 0. A row with no other image in
the batch has no negative; it gets its own index and `has_negative` False, and the ITM loss
gives its negative rows weight 0.
"""

from __future__ import annotations

import flax
import jax
import jax.numpy as jnp


@flax.struct.dataclass
class HardNegatives:
    image_for_text: jax.Array  # [batch] int32: the image row paired with text i
    text_for_image: jax.Array  # [batch] int32: the text row paired with image j
    has_negative: jax.Array  # [batch] bool: row i has another image to draw from


def sample_hard_negatives(
    similarity: jax.Array, image_key: jax.Array, rng: jax.Array
) -> HardNegatives:
    """`similarity` [texts, images] of the batch's own rows (logits: the softmax is over them)."""
    allowed = image_key[:, None] != image_key[None, :]  # also excludes the diagonal
    scores = jax.lax.stop_gradient(similarity.astype(jnp.float32))
    text_rng, image_rng = jax.random.split(rng)
    image_pick = jax.random.categorical(text_rng, jnp.where(allowed, scores, -jnp.inf), axis=-1)
    text_pick = jax.random.categorical(image_rng, jnp.where(allowed, scores.T, -jnp.inf), axis=-1)
    return _negatives(image_pick, text_pick, allowed)


def _negatives(image_pick, text_pick, allowed) -> HardNegatives:
    """Rows with no other image keep their own index, marked by `has_negative`."""
    has_negative = allowed.any(axis=-1)
    rows = jnp.arange(allowed.shape[0])
    return HardNegatives(
        image_for_text=jnp.where(has_negative, image_pick, rows).astype(jnp.int32),
        text_for_image=jnp.where(has_negative, text_pick, rows).astype(jnp.int32),
        has_negative=has_negative,
    )


def hardest_negatives(similarity: jax.Array, image_key: jax.Array) -> HardNegatives:
    """MVPTR's: the most similar allowed row (ties go to the lowest index)."""
    allowed = image_key[:, None] != image_key[None, :]
    scores = jax.lax.stop_gradient(similarity.astype(jnp.float32))
    image_pick = jnp.argmax(jnp.where(allowed, scores, -jnp.inf), axis=-1)
    text_pick = jnp.argmax(jnp.where(allowed, scores.T, -jnp.inf), axis=-1)
    return _negatives(image_pick, text_pick, allowed)
