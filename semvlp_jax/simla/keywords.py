"""Pseudo-labelled keywords (SIMLA's PSL): the words the teacher's fused [CLS] attends to.

From the last layer's self-attention row of [CLS] [batch, heads, length]: in each head the
`per_head` most attended positions (4) get a vote; the `count` (5) positions with the most votes
become the caption's keywords, as a multi-hot over the vocabulary. Unlike the reference code,
positions holding [CLS], [SEP] or [PAD] (any of `excluded_ids`) can never be chosen: they carry
no concept, and [SEP] often draws attention. Ties in votes go to the earlier position, so the
selection is deterministic; a position no head chose is never a keyword.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def keyword_positions(
    cls_attention: jax.Array,
    text_ids: jax.Array,
    excluded_ids: tuple[int, ...],
    *,
    per_head: int = 4,
    count: int = 5,
) -> tuple[jax.Array, jax.Array]:
    """(positions [batch, count] int32, chosen [batch, count] bool) of each caption's keywords,
    most voted first."""
    length = text_ids.shape[-1]
    eligible = ~jnp.isin(text_ids, jnp.asarray(excluded_ids, text_ids.dtype))  # [batch, length]
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
    excluded_ids: tuple[int, ...],
    vocab_size: int,
    *,
    per_head: int = 4,
    count: int = 5,
) -> jax.Array:
    """[batch, vocab_size] float32 multi-hot of the keywords' token ids."""
    positions, chosen = keyword_positions(
        cls_attention, text_ids, excluded_ids, per_head=per_head, count=count
    )
    ids = jnp.take_along_axis(text_ids, positions, axis=-1)
    hits = jax.nn.one_hot(ids, vocab_size) * chosen[..., None]
    return jnp.minimum(hits.sum(axis=1), 1.0)
