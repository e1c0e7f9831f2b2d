"""SemVLP's pre-training objectives: MLM, masked object prediction, ITM and image QA.

Token- and region-level losses and QA count only matched image-text pairs (an ITM negative's text
does not describe its image, so predicting its masked words from that image teaches nothing);
ITM counts every caption, matched or not.
"""

from __future__ import annotations

import jax.numpy as jnp
import optax

from semvlp_jax.models.heads import (
    AnswerHead,
    MaskedLanguageModelHead,
    MaskedObjectHead,
    MatchingHead,
)
from semvlp_jax.objectives.losses import gather_positions, weighted_cross_entropy, weighted_mean
from semvlp_jax.objectives.registry import register


def _matched(batch) -> jnp.ndarray:
    return batch['is_matched'].astype(jnp.float32)


@register('mlm', heads=(MaskedLanguageModelHead,))
def masked_language_modelling(model, encoded, batch):
    """Cross-entropy at masked text positions only; decoder tied to the word embeddings. With
    phrase concepts (MVPTR) the logits span the words only (a phrase is never a target)."""
    hidden = gather_positions(encoded.text, batch['mlm_positions'])
    logits = model.mlm_head(hidden, model.text_embeddings.word)[..., : model.num_words]
    weights = batch['mlm_weights'] * _matched(batch)[:, None]
    loss, accuracy = weighted_cross_entropy(logits, batch['mlm_targets'], weights)
    return (loss,), {'mlm_accuracy': accuracy}


@register('mop', heads=(MaskedObjectHead,))
def masked_object_prediction(model, encoded, batch):
    """At masked regions: L2 feature regression + object-label CE (+ attribute CE if labelled)."""
    predictions = model.object_head(gather_positions(encoded.image, batch['mop_positions']))
    weights = batch['mop_weights'] * _matched(batch)[:, None]
    squared_error = jnp.mean(jnp.square(predictions['features'] - batch['mop_features']), axis=-1)
    feature_loss = weighted_mean(squared_error, weights)
    labels = batch['mop_object_labels']
    object_loss, object_accuracy = weighted_cross_entropy(
        predictions['object_logits'], labels, weights * (labels >= 0)
    )
    metrics = {'mop_feature_loss': feature_loss, 'mop_object_accuracy': object_accuracy}
    terms = (feature_loss, object_loss)
    if 'attribute_logits' in predictions:
        labels = batch['mop_attribute_labels']
        attribute_loss, attribute_accuracy = weighted_cross_entropy(
            predictions['attribute_logits'], labels, weights * (labels >= 0)
        )
        metrics['mop_attribute_accuracy'] = attribute_accuracy
        terms += (attribute_loss,)
    return terms, metrics


@register('itm', heads=(MatchingHead,))
def image_text_matching(model, encoded, batch):
    """2-way classification of the pooled output: is this the caption's own image?

    Only captions count: a question ("how many objects are there?") often fits any image, so
    its match label would be noise.
    """
    logits = model.matching_head(encoded.pooled)
    labels = batch['is_matched'].astype(jnp.int32)
    is_caption = 1 - batch['is_question'].astype(jnp.float32)
    loss, accuracy = weighted_cross_entropy(logits, labels, is_caption)
    return (loss,), {'itm_accuracy': accuracy}


@register('qa', heads=(AnswerHead,))
def image_question_answering(model, encoded, batch):
    """Binary cross-entropy against soft answer scores, for matched pairs whose text is a question.

    The loss sums over answers (as in bottom-up-attention VQA); `qa_accuracy` is the soft score of
    the arg-max answer, i.e. VQA accuracy.
    """
    logits = model.answer_head(encoded.pooled)
    targets = batch['answer_scores']
    weights = batch['is_question'].astype(jnp.float32) * _matched(batch)
    per_example = jnp.sum(optax.sigmoid_binary_cross_entropy(logits, targets), axis=-1)
    predicted_score = jnp.take_along_axis(targets, jnp.argmax(logits, -1)[:, None], axis=-1)[:, 0]
    return (weighted_mean(per_example, weights),), {
        'qa_accuracy': weighted_mean(predicted_score, weights)
    }
