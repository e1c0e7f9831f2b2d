"""Alignment diagnostics: is the model reading the image at all?

Pre-training can lower MLM and QA losses from the text alone, so a plateau of ITM at chance
says little by itself. These figures, computed on a validation batch of matched pairs at every
evaluation when `config.diagnostics` is on (keys `val/<mode>/diag_*`), show where alignment
stands:

- `diag_text_to_image_attention_l<i>` (single-stream): the attention mass that real text queries
  put on image keys in layer i (mean over heads). Image tokens are `image_len / (image_len +
  text_len)` of the keys; a mass near that share means attention ignores modality.
- `diag_image_attention_entropy_l<i>`: entropy of the text queries' attention *within* the real
  image tokens (single: renormalised over image keys; two: the text->image cross-attention), as a
  fraction of the uniform entropy log(#regions): 1 means every region weighs the same, i.e. the
  text picks out no object.
- `diag_cross_update_l<i>` (two-stream): RMS of the text->image cross-attention's update against
  the RMS of the text states it is added to (before the LayerNorm): how loudly the image speaks.
- `diag_itm_logit_change`: mean |z(own image) - z(another image)| over captions, z being the
  ITM head's matched-minus-unmatched logit; `diag_itm_margin` the mean of z(own) - z(other). A
  model that ignores the image gives both 0.
- `diag_region_to_text_scale`: RMS of the visual embeddings over real regions / RMS of the text
  embeddings over real tokens, as the encoder's first layer receives them.
- `diag_grad_<objective>`: the norm of each objective's own (unweighted) gradient on the
  parameters every objective shares (embeddings and encoder, `shared_gradient_norm`): which
  objective drives the encoder. In the demo at initialisation QA's is 60x MLM's.

Gradient norms per parameter group are train metrics (`grad_norm/<group>`, see
`parameter_group_norms`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from semvlp_jax.models.semvlp import SemVLP, is_image_field, one_row_per_image

# Encoder parameters are grouped by the block they belong to, across layers and stacks.
ENCODER_BLOCKS = ('self_attention', 'cross_attention', 'feed_forward')
# The top-level modules every objective reads (the rest are heads).
SHARED_MODULES = ('text_embeddings', 'visual_embeddings', 'encoder')


def text_to_image_mass(probs: jax.Array, image_keys: jax.Array, query_weights: jax.Array):
    """Mean attention mass on image keys.

    probs [batch, heads, queries, keys] (rows sum to 1); image_keys [batch, keys] (1 for a
    real image key); query_weights [batch, queries] (1 for the queries to average over, e.g.
    real text tokens). Returns a scalar in [0, 1].
    """
    mass = jnp.einsum('bhqk,bk->bhq', probs, image_keys.astype(probs.dtype)).mean(axis=1)
    weights = query_weights.astype(mass.dtype)
    return jnp.sum(mass * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def normalised_entropy(probs: jax.Array, keys: jax.Array, query_weights: jax.Array):
    """Entropy of the attention renormalised over `keys`, as a fraction of log(#keys).

    probs [batch, heads, queries, all_keys]; keys [batch, all_keys] (1 for the keys to
    renormalise over; rows with fewer than two count nothing); query_weights [batch, queries].
    1 = uniform over those keys, 0 = all mass on one key.
    """
    keys = keys.astype(probs.dtype)
    within = probs * keys[:, None, None, :]
    within = within / jnp.maximum(within.sum(-1, keepdims=True), 1e-12)
    entropy = -jnp.sum(jnp.where(within > 0, within * jnp.log(jnp.maximum(within, 1e-30)), 0), -1)
    count = keys.sum(-1)
    uniform = jnp.log(jnp.maximum(count, 2.0))[:, None, None]
    ratio = (entropy / uniform).mean(axis=1)  # [batch, queries]
    weights = query_weights.astype(ratio.dtype) * (count >= 2)[:, None]
    return jnp.sum(ratio * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def rms(x: jax.Array, mask: jax.Array) -> jax.Array:
    """Root mean square of x [batch, len, hidden] over positions where mask [batch, len] is set."""
    weights = mask.astype(jnp.float32)
    squares = jnp.mean(jnp.square(x.astype(jnp.float32)), axis=-1)
    return jnp.sqrt(jnp.sum(squares * weights) / jnp.maximum(jnp.sum(weights), 1.0))


def itm_logit(model: SemVLP, batch: dict, mode: str) -> jax.Array:
    """The ITM head's matched-minus-unmatched logit per row [batch]."""
    logits = model.matching_head(model(batch, mode=mode).pooled)
    return logits[:, 1] - logits[:, 0]


def alignment(model: SemVLP, batch: dict, mode: str) -> dict[str, jax.Array]:
    """The diagnostics above on `batch` (every pair matched: its own image), no dropout."""
    batch = one_row_per_image(batch)
    text_mask = batch['text_mask']
    text_in = model.text_embeddings(batch['text_ids'], None)
    image_in, image_mask = model.visual_embeddings(batch, model.text_embeddings.token_type, None)
    out = model.encoder(text_in, text_mask, image_in, image_mask, mode=mode, rngs=None)
    encoder = model.encoder
    num_layers = len(out.text_layers)
    texts = [text_in, *out.text_layers]  # texts[i]: the input of layer i
    images = [image_in, *out.image_layers]
    results = {}
    image_len = image_in.shape[1]
    for i in range(num_layers):
        layer = encoder.layer(i)
        if mode == 'single':
            x = jnp.concatenate([images[i], texts[i]], axis=1)
            keys = jnp.concatenate([image_mask, text_mask], axis=1)
            probs, _ = layer.self_attention.inspect(x, x, keys)
            probs = probs[:, :, image_len:]  # text queries
            image_keys = jnp.concatenate([image_mask, jnp.zeros_like(text_mask)], axis=1)
            results[f'diag_text_to_image_attention_l{i}'] = text_to_image_mass(
                probs, image_keys, text_mask
            )
            results[f'diag_image_attention_entropy_l{i}'] = normalised_entropy(
                probs, image_keys, text_mask
            )
        elif layer.cross_attention is not None:
            text = layer.self_attention(texts[i], texts[i], text_mask, None)
            image = layer.self_attention(images[i], images[i], image_mask, None)
            probs, update = layer.cross_attention.text_to_image.inspect(text, image, image_mask)
            results[f'diag_image_attention_entropy_l{i}'] = normalised_entropy(
                probs, image_mask, text_mask
            )
            results[f'diag_cross_update_l{i}'] = rms(update, text_mask) / rms(text, text_mask)
    own = itm_logit(model, batch, mode)
    other = dict(batch)  # each text with the next row's image
    for key in batch:
        if is_image_field(key):
            other[key] = jnp.roll(batch[key], 1, axis=0)
    swapped = itm_logit(model, other, mode)
    captions = 1 - batch['is_question'].astype(jnp.float32)
    count = jnp.maximum(captions.sum(), 1.0)
    results['diag_itm_logit_change'] = jnp.sum(jnp.abs(own - swapped) * captions) / count
    results['diag_itm_margin'] = jnp.sum((own - swapped) * captions) / count
    results['diag_region_to_text_scale'] = rms(image_in, image_mask) / rms(text_in, text_mask)
    return results


def parameter_group(path: tuple[str, ...]) -> str:
    """The group a parameter's path belongs to: the top-level module (`text_embeddings`,
    `mlm_head`, ...), the encoder split by block (`encoder/self_attention`, ...)."""
    if path[0] == 'encoder':
        block = next((p for p in path if p in ENCODER_BLOCKS), 'other')
        return f'encoder/{block}'
    return path[0]


def parameter_group_norms(grads) -> dict[str, jax.Array]:
    """{group: global norm of the group's gradients} for a pure-dict gradient tree."""
    squares: dict[str, jax.Array] = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(grads)[0]:
        names = tuple(str(getattr(k, 'key', getattr(k, 'idx', k))) for k in path)
        group = parameter_group(names)
        squares[group] = squares.get(group, 0.0) + jnp.sum(jnp.square(leaf.astype(jnp.float32)))
    return {group: jnp.sqrt(total) for group, total in sorted(squares.items())}


def shared_gradient_norm(grads) -> jax.Array:
    """Global norm of a pure-dict gradient tree's parts under `SHARED_MODULES`."""
    shared = [grads[name] for name in SHARED_MODULES if name in grads]
    leaves = jax.tree.leaves(shared)
    return jnp.sqrt(sum(jnp.sum(jnp.square(leaf.astype(jnp.float32))) for leaf in leaves))
