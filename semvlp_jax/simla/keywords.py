"""Pseudo-labelled keywords (SIMLA's PSL): the words the teacher's fused [CLS] attends to.

From the last layer's self-attention row of [CLS] [batch, heads, length]: in each head the
`per_head` most attended positions (4) get a vote; the `count` (5) positions with the most votes
become the caption's keywords, as a multi-hot over the vocabulary. Unlike the reference code,
positions holding [CLS], [SEP] or [PAD] can never be chosen (`word_positions`: they carry no
concept, and [SEP] often draws attention). Ties in votes go to the earlier position, so the
selection is deterministic; a position no head chose is never a keyword.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def word_positions(text_mask: jax.Array) -> jax.Array:
    """[batch, length] bool: the positions of a [CLS] w1 ... wn [SEP] [PAD]... text that hold a
    word: inside the mask, neither the first ([CLS]) nor the last real one ([SEP]). From the mask
    alone, so it holds for any vocabulary's special ids."""
    mask = text_mask.astype(bool)
    positions = jnp.arange(mask.shape[-1])
    last = jnp.sum(mask, axis=-1, keepdims=True) - 1
    return mask & (positions > 0) & (positions < last)


def keyword_positions(
    cls_attention: jax.Array,
    eligible: jax.Array,
    *,
    per_head: int = 4,
    count: int = 5,
) -> tuple[jax.Array, jax.Array]:
    """(positions [batch, count] int32, chosen [batch, count] bool) of each caption's keywords,
    most voted first; only `eligible` [batch, length] positions can be chosen."""
    length = eligible.shape[-1]
    attention = jnp.where(eligible[:, None, :], cls_attention.astype(jnp.float32), -jnp.inf)
    values, top = jax.lax.top_k(attention, min(per_head, length))  # [batch, heads, per_head]
    picked = jax.nn.one_hot(top, length) * jnp.isfinite(values)[..., None]
    votes = picked.sum(axis=(1, 2))  # [batch, length]
    # Ties to the earlier position: votes are whole numbers, so a fraction below 1 only orders
    # positions of equal votes.
    ranked = votes - jnp.arange(length) / (length + 1)
    _, positions = jax.lax.top_k(ranked, min(count, length))
    chosen = jnp.take_along_axis(votes, positions, axis=-1) > 0
    return positions.astype(jnp.int32), chosen


def keyword_targets(
    cls_attention: jax.Array,
    text_ids: jax.Array,
    eligible: jax.Array,
    vocab_size: int,
    *,
    per_head: int = 4,
    count: int = 5,
) -> jax.Array:
    """[batch, vocab_size] float32 multi-hot of the keywords' token ids."""
    positions, chosen = keyword_positions(cls_attention, eligible, per_head=per_head, count=count)
    ids = jnp.take_along_axis(text_ids, positions, axis=-1)
    hits = jax.nn.one_hot(ids, vocab_size) * chosen[..., None]
    return jnp.minimum(hits.sum(axis=1), 1.0)
