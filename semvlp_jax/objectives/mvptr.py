"""MVPTR's objectives (staged mode): contrast and masked tags in the uni-modal stage; matching
with the hardest negatives and weakly supervised phrase grounding in the cross-modal stage. MLM
is the shared `mlm` (words only, with phrases masked alongside their words by the pipeline).

ITM labels follow this project's convention, 1 = matched; MVPTR's code (BERT's NSP) uses 0.
Questions take no part in contrast, matching or grounding (they do not describe the image).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from semvlp_jax.models.heads import ContrastiveHead, MaskedLanguageModelHead, MatchingHead
from semvlp_jax.objectives.contrastive import symmetric_contrastive
from semvlp_jax.objectives.losses import gather_positions, weighted_cross_entropy, weighted_mean
from semvlp_jax.objectives.registry import register
from semvlp_jax.simla import negatives


def _is_caption(batch) -> jax.Array:
    return 1.0 - batch['is_question'].astype(jnp.float32)


def _unit_features(model, encoded) -> tuple[jax.Array, jax.Array]:
    head = model.contrastive_head
    return head.embed_text(encoded.unimodal_text), head.embed_image(encoded.unimodal_image)


@register('vsc', heads=(ContrastiveHead,))
def visual_semantic_contrastive(model, encoded, batch):
    """Symmetric in-batch InfoNCE between the text [CLS] and the visual [CLS] of the uni-modal
    stage, projected to unit vectors; the logit scale is learnt from log(1/0.07), unclamped
    (CLIP-style, as MVPTR's code)."""
    text, image = _unit_features(model, encoded)
    scale = jnp.exp(model.contrastive_head.log_inverse_temperature[...])
    loss, accuracy = symmetric_contrastive(text, image, scale, batch)
    return (loss,), {'vsc_accuracy': accuracy}


@register('mcr', heads=(MaskedLanguageModelHead,))
def masked_concept_recovery(model, encoded, batch):
    """The masked object tags from the visual stage's outputs, through the tied LM head, over
    the word vocabulary."""
    hidden = gather_positions(encoded.tags, batch['mcr_positions'])
    logits = model.mlm_head(hidden, model.text_embeddings.word)[..., : model.num_words]
    loss, accuracy = weighted_cross_entropy(logits, batch['mcr_targets'], batch['mcr_weights'])
    return (loss,), {'mcr_accuracy': accuracy}


@register('itm_hardest', heads=(MatchingHead,), own_negatives=True)
def hardest_negative_matching(model, encoded, batch):
    """Every text with its image (B positives), and B negatives: the first half of the rows
    pair their text with the most VSC-similar other image, the second half their image with the
    most similar other text (`concepts.hard_negatives='sampled'`: drawn from the softmax
    instead). Never the positive, never another caption of the same image."""
    text, image = _unit_features(model, encoded)
    similarity = text @ image.T
    if model.concepts.hard_negatives == 'sampled':
        scale = jnp.exp(model.contrastive_head.log_inverse_temperature[...])
        picked = negatives.sample_hard_negatives(
            scale * similarity, batch['image_key'], encoded.sample_key
        )
    else:
        picked = negatives.hardest_negatives(similarity, batch['image_key'])
    size = similarity.shape[0]
    rows = jnp.arange(size)
    first_half = rows < size // 2
    text_rows = jnp.where(first_half, rows, picked.text_for_image)
    image_rows = jnp.where(first_half, picked.image_for_text, rows)
    negative = model.matching_head(model.match(encoded.fusion, text_rows, image_rows))
    logits = jnp.concatenate([model.matching_head(encoded.pooled), negative])
    caption = _is_caption(batch)
    has = picked.has_negative.astype(jnp.float32)
    weights = jnp.concatenate([caption, has * caption[text_rows] * caption[image_rows]])
    labels = jnp.concatenate([jnp.ones_like(rows), jnp.zeros_like(rows)])
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    correct = jnp.argmax(logits, axis=-1) == labels
    return (weighted_mean(losses, weights),), {
        'itm_accuracy': weighted_mean(correct, weights),
        'itm_positive_accuracy': weighted_mean(correct[:size], weights[:size]),
    }


def grounding_scores(
    phrases: jax.Array,
    phrase_weights: jax.Array,
    regions: jax.Array,
    region_mask: jax.Array,
    key: jax.Array,
    top_k: int,
) -> jax.Array:
    """MVPTR's pair score [rows]: per phrase, one of its `top_k` highest region cosines picked
    uniformly at random (among fewer when the image has fewer regions), averaged over the
    phrases. phrases [rows, P, hidden], phrase_weights [rows, P], regions [rows, R, hidden],
    region_mask [rows, R]. A row without phrases scores 0."""
    unit = lambda x: x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-6)  # noqa: E731
    cosine = jnp.einsum('bph,brh->bpr', unit(phrases), unit(regions))
    real = region_mask.astype(bool)[:, None, :]
    k = min(top_k, regions.shape[1])
    top, _ = jax.lax.top_k(jnp.where(real, cosine, -jnp.inf), k)  # [rows, P, k]
    available = jnp.minimum(region_mask.astype(jnp.int32).sum(-1), k)[:, None]  # [rows, 1]
    pick = jax.random.randint(key, phrase_weights.shape, 0, jnp.maximum(available, 1))
    chosen = jnp.take_along_axis(top, pick[..., None], axis=-1)[..., 0]
    chosen = jnp.where(available > 0, chosen, 0.0)
    weights = phrase_weights.astype(jnp.float32)
    return (chosen * weights).sum(-1) / jnp.maximum(weights.sum(-1), 1.0)


@register('wpg', heads=())
def weakly_supervised_phrase_grounding(model, encoded, batch):
    """Phrase tokens against regions in a joint layer (`concepts.grounding_layer`): the pair's
    score (`grounding_scores`) must beat, by the margin, the same phrases' score against the
    regions of another image of the batch (drawn uniformly): `max(0, margin + neg - pos)`.
    Pairs without phrases, or without another image, contribute nothing."""
    settings = model.concepts
    layer = settings.grounding_layer
    text, image = encoded.text_layers[layer], encoded.image_layers[layer]
    phrases = gather_positions(text.astype(jnp.float32), batch['phrase_positions'])
    regions = image[:, : batch['region_mask'].shape[1]].astype(jnp.float32)
    region_mask, phrase_weights = batch['region_mask'], batch['phrase_weights']
    other_key, positive_key, negative_key = jax.random.split(encoded.sample_key, 3)
    keys = batch['image_key']
    allowed = keys[:, None] != keys[None, :]
    other = jax.random.categorical(other_key, jnp.where(allowed, 0.0, -jnp.inf), axis=-1)
    top_k = settings.grounding_top_k
    positive = grounding_scores(phrases, phrase_weights, regions, region_mask, positive_key, top_k)
    negative = grounding_scores(
        phrases,
        phrase_weights,
        jnp.take(regions, other, 0),
        jnp.take(region_mask, other, 0),
        negative_key,
        top_k,
    )
    weights = ((phrase_weights.sum(-1) > 0) * allowed.any(-1) * _is_caption(batch)).astype(
        jnp.float32
    )
    loss = jax.nn.relu(settings.grounding_margin + negative - positive)
    return (weighted_mean(loss, weights),), {
        'wpg_accuracy': weighted_mean(positive > negative, weights),
    }
