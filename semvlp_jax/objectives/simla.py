"""SIMLA's objectives (fuse mode): momentum contrastive, hard-negative matching, masked modelling
of both modalities conditioned on the other, and pseudo-labelled keywords.

Each reads the teacher's targets from `encoded.momentum` (`simla/targets.py`) and mixes them in
with weight alpha; with alpha = 0 each is its hard loss. Token- and patch-level losses count
matched pairs only, like SemVLP's (the recipe pairs every text with its own image: its negatives
are ITM's, made here); questions take no part in ITC, ITM or keywords (they do not describe the
image).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from semvlp_jax.models.heads import (
    ConceptHead,
    ContrastiveHead,
    MaskedLanguageModelHead,
    MatchingHead,
    PatchHead,
)
from semvlp_jax.models.semvlp import unmasked_text_ids
from semvlp_jax.objectives.losses import gather_positions, weighted_mean
from semvlp_jax.objectives.registry import register
from semvlp_jax.simla import distillation, keywords, negatives

# The objectives that need the momentum teacher in the train state (`config.momentum`).
MOMENTUM_OBJECTIVES = ('itc_momentum', 'itm_hard', 'xmm_text', 'xmm_image', 'psl')


def _is_caption(batch) -> jax.Array:
    return 1.0 - batch['is_question'].astype(jnp.float32)


def _matched(batch) -> jax.Array:
    return batch['is_matched'].astype(jnp.float32)


def _unit_features(model, encoded) -> dict[str, jax.Array]:
    head = model.contrastive_head
    return {
        'image': head.embed_image(encoded.unimodal_image),
        'text': head.embed_text(encoded.unimodal_text),
    }


def _temperature(model) -> jax.Array:
    log_inverse = model.contrastive_head.log_inverse_temperature[...]
    return distillation.clamp_temperature(jnp.exp(-log_inverse))


@register('itc_momentum', heads=(ContrastiveHead,), teacher=lambda m, e, b: _unit_features(m, e))
def momentum_contrastive(model, encoded, batch):
    """ITC over the batch and the queues against α·softmax(teacher) + (1−α)·one-hot targets;
    the temperature clamped to [0.001, 0.5]. The teacher's features are also what the train
    step enqueues."""
    momentum = encoded.momentum
    student, teacher = _unit_features(model, encoded), momentum.targets['itc_momentum']
    loss, accuracy = distillation.momentum_contrastive(
        student['image'],
        student['text'],
        teacher['image'],
        teacher['text'],
        batch['image_key'],
        momentum.queues,
        _temperature(model),
        momentum.alpha,
    )
    weights = _is_caption(batch)
    return (weighted_mean(loss, weights),), {'itc_accuracy': weighted_mean(accuracy, weights)}


@register('itm_hard', heads=(MatchingHead,), own_negatives=True)
def hard_negative_matching(model, encoded, batch):
    """Each text with its image, with one negative image and each image with one negative text
    sampled from the in-batch contrastive softmax (never the positive, never another caption of
    the same image): 3B fused pairs, label 1 for the first B."""
    features = _unit_features(model, encoded)
    similarity = features['text'] @ features['image'].T / _temperature(model)
    picked = negatives.sample_hard_negatives(similarity, batch['image_key'], encoded.sample_key)
    rows = jnp.arange(similarity.shape[0])
    text_rows = jnp.concatenate([rows, rows, picked.text_for_image])
    image_rows = jnp.concatenate([rows, picked.image_for_text, rows])
    logits = model.matching_head(model.match(encoded.fusion, text_rows, image_rows))
    caption, has = _is_caption(batch), picked.has_negative.astype(jnp.float32)
    weights = jnp.concatenate(
        [caption, caption * has, caption * has * caption[picked.text_for_image]]
    )
    labels = jnp.concatenate([jnp.ones_like(rows), jnp.zeros_like(rows), jnp.zeros_like(rows)])
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    correct = jnp.argmax(logits, axis=-1) == labels
    # Two in three pairs are negatives: predicting "no match" always scores 0.67, so the
    # positives' accuracy is reported too.
    size = rows.shape[0]
    return (weighted_mean(losses, weights),), {
        'itm_accuracy': weighted_mean(correct, weights),
        'itm_positive_accuracy': weighted_mean(correct[:size], weights[:size]),
    }


def _masked_word_logits(model, encoded, batch) -> jax.Array:
    hidden = gather_positions(encoded.text, batch['mlm_positions'])
    return model.mlm_head(hidden, model.text_embeddings.word)


def _distilled_classes(logits, labels, weights, momentum, name):
    """(1−α) CE + α soft CE against the teacher's distribution at the same positions."""
    hard = jax.nn.one_hot(jnp.maximum(labels, 0), logits.shape[-1])
    soft = distillation.mixed_targets(hard, momentum.targets[name], momentum.alpha)
    loss = weighted_mean(distillation.soft_cross_entropy(logits, soft), weights)
    accuracy = weighted_mean(jnp.argmax(logits, axis=-1) == labels, weights)
    return loss, accuracy


@register('xmm_text', heads=(MaskedLanguageModelHead,), teacher=_masked_word_logits)
def masked_text_modelling(model, encoded, batch):
    """MLM of the caption fused with the unmasked image, distilled from the teacher's MLM."""
    weights = batch['mlm_weights'] * _matched(batch)[:, None]
    loss, accuracy = _distilled_classes(
        _masked_word_logits(model, encoded, batch),
        batch['mlm_targets'],
        weights,
        encoded.momentum,
        'xmm_text',
    )
    return (loss,), {'xmm_text_accuracy': accuracy}


def _masked_patch_outputs(model, encoded, batch) -> jax.Array:
    """Patch-head outputs at the masked patches of the image-side pass ([CLS] dropped)."""
    return model.patch_head(gather_positions(encoded.masked_image[:, 1:], batch['patch_positions']))


@register('xmm_image', heads=(PatchHead,), teacher=_masked_patch_outputs)
def masked_patch_modelling(model, encoded, batch):
    """The masked patches of the image-side pass (patches querying the caption's embeddings)
    predict the visual tokenizer's targets of the same view: codes (CE, distilled like
    `xmm_text`) or normalised pixels (squared error; a regression has no soft label)."""
    outputs = _masked_patch_outputs(model, encoded, batch)
    tokenizer = model.visual_tokenizer
    targets = gather_positions_of(tokenizer.targets(batch['pixels']), batch['patch_positions'])
    weights = batch['patch_weights'] * _matched(batch)[:, None]
    if tokenizer.kind == 'classes':
        loss, accuracy = _distilled_classes(
            outputs, targets, weights, encoded.momentum, 'xmm_image'
        )
        return (loss,), {'xmm_image_accuracy': accuracy}
    error = jnp.mean(jnp.square(outputs - targets), axis=-1)
    loss = weighted_mean(error, weights)
    return (loss,), {'xmm_image_error': loss}


def gather_positions_of(values: jax.Array, positions: jax.Array) -> jax.Array:
    """values [batch, len] or [batch, len, dim] at positions [batch, n]."""
    if values.ndim == 2:
        return jnp.take_along_axis(values, positions, axis=1)
    return gather_positions(values, positions)


def _keyword_targets(teacher, encoded, batch) -> dict[str, jax.Array]:
    """The teacher's keywords of each caption (multi-hot) and its concept probabilities."""
    caption = unmasked_text_ids(batch) if 'mlm_positions' in batch else batch['text_ids']
    attention = teacher.cls_attention(encoded.fusion)
    eligible = keywords.word_positions(batch['text_mask'])
    vocab = teacher.concept_head.classifier.out_features
    image = teacher.contrastive_head.embed_image(encoded.unimodal_image)
    return {
        'keywords': keywords.keyword_targets(attention, caption, eligible, vocab),
        'concepts': jax.nn.sigmoid(teacher.concept_head(image)),
    }


@register('psl', heads=(ConceptHead,), teacher=_keyword_targets)
def pseudo_labelled_keywords(model, encoded, batch):
    """The image's contrastive feature predicts the caption's keywords through the concept
    head: BCE, (1−α) against the teacher's keywords + α against its concept probabilities.
    `psl_precision`: the share of the top-5 predicted words that are keywords."""
    momentum = encoded.momentum
    logits = model.concept_head(_unit_features(model, encoded)['image'])
    targets = momentum.targets['psl']
    hard = optax.sigmoid_binary_cross_entropy(logits, targets['keywords']).sum(-1)
    soft = optax.sigmoid_binary_cross_entropy(logits, targets['concepts']).sum(-1)
    loss = (1 - momentum.alpha) * hard + momentum.alpha * soft
    weights = _is_caption(batch)
    _, top = jax.lax.top_k(logits, 5)
    precision = jnp.take_along_axis(targets['keywords'], top, axis=-1).mean(-1)
    return (weighted_mean(loss, weights),), {'psl_precision': weighted_mean(precision, weights)}
