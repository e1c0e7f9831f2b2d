"""Output heads. Token-level heads take only the gathered positions they score."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from semvlp_jax.models.layers import BERT_NUMERICS, Numerics, dense, layer_norm, logical


class Pooler(nnx.Module):
    """BERT pooler: dense + tanh on the first (text [CLS]) token."""

    def __init__(self, hidden_size: int, *, rngs: nnx.Rngs):
        self.dense = dense(hidden_size, hidden_size, ('embed', 'mlp'), rngs=rngs)

    def __call__(self, text: jax.Array) -> jax.Array:
        return jnp.tanh(self.dense(text[:, 0]))


class Transform(nnx.Module):
    """dense + GELU + LayerNorm, the BERT prediction-head transform."""

    def __init__(self, hidden_size: int, *, rngs: nnx.Rngs, numerics: Numerics = BERT_NUMERICS):
        self.numerics = numerics
        self.dense = dense(hidden_size, hidden_size, ('embed', 'mlp'), rngs=rngs)
        self.norm = layer_norm(hidden_size, rngs=rngs, eps=numerics.layer_norm_eps)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.norm(self.numerics.activation(self.dense(x)))


class MaskedLanguageModelHead(nnx.Module):
    """Transform, then logits against the (tied) word-embedding table plus an output bias."""

    def __init__(
        self,
        hidden_size: int,
        vocab_size: int,
        *,
        rngs: nnx.Rngs,
        numerics: Numerics = BERT_NUMERICS,
    ):
        self.transform = Transform(hidden_size, rngs=rngs, numerics=numerics)
        self.bias = nnx.Param(
            logical(nnx.initializers.zeros, 'vocab')(rngs.params(), (vocab_size,))
        )

    def __call__(self, hidden: jax.Array, word_embeddings: nnx.Embed) -> jax.Array:
        """hidden [batch, predictions, hidden] -> logits [batch, predictions, vocab] (f32)."""
        h = self.transform(hidden)
        return (word_embeddings.attend(h) + self.bias[...]).astype(jnp.float32)


class MaskedObjectHead(nnx.Module):
    """Masked object prediction: feature regression, object-label and attribute-label logits."""

    def __init__(
        self,
        hidden_size: int,
        feature_dim: int,
        num_objects: int,
        num_attributes: int,
        *,
        rngs: nnx.Rngs,
    ):
        self.transform = Transform(hidden_size, rngs=rngs)
        self.feature = dense(hidden_size, feature_dim, ('embed', 'visual_features'), rngs=rngs)
        self.objects = dense(hidden_size, num_objects, ('embed', 'classes'), rngs=rngs)
        self.attributes = (
            dense(hidden_size, num_attributes, ('embed', 'classes'), rngs=rngs)
            if num_attributes
            else None
        )

    def __call__(self, hidden: jax.Array) -> dict[str, jax.Array]:
        h = self.transform(hidden)
        out = {
            'features': self.feature(h).astype(jnp.float32),
            'object_logits': self.objects(h).astype(jnp.float32),
        }
        if self.attributes is not None:
            out['attribute_logits'] = self.attributes(h).astype(jnp.float32)
        return out


class MatchingHead(nnx.Module):
    """Image-text matching: 2-way logits on the pooled output (index 1 = matched)."""

    def __init__(self, hidden_size: int, *, rngs: nnx.Rngs):
        self.classifier = dense(hidden_size, 2, ('embed', 'classes'), rngs=rngs)

    def __call__(self, pooled: jax.Array) -> jax.Array:
        return self.classifier(pooled).astype(jnp.float32)


class Classifier(nnx.Module):
    """LXMERT's classifier: dense(2h) + GELU + LayerNorm + dense(num_classes), f32 logits.

    `AnswerHead` and `PairHead` are this one structure with their own input and output sizes;
    they are separate classes so that objectives can name the head they read.
    """

    def __init__(self, in_features: int, hidden_size: int, num_classes: int, *, rngs: nnx.Rngs):
        self.expand = dense(in_features, 2 * hidden_size, ('embed', 'mlp'), rngs=rngs)
        self.norm = layer_norm(2 * hidden_size, rngs=rngs)
        self.classifier = dense(2 * hidden_size, num_classes, ('mlp', 'classes'), rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        h = self.norm(jax.nn.gelu(self.expand(x), approximate=False))
        return self.classifier(h).astype(jnp.float32)


class AnswerHead(Classifier):
    """Answer logits [batch, num_answers] from the pooled output [batch, hidden].

    With `prior_bias` the output bias starts at the logit of 1 / num_answers (every answer's
    sigmoid at its share instead of 0.5). The QA loss sums a binary cross-entropy per answer, so
    with zero biases its first gradients are about num_answers times a softmax loss's: in the
    demo 60x the MLM gradient on the shared encoder at step 0. Adam's second moment (b2=0.999)
    remembers that burst for ~1000 steps and damps every objective's updates meanwhile.
    """

    def __init__(
        self, hidden_size: int, num_answers: int, *, rngs: nnx.Rngs, prior_bias: bool = False
    ):
        super().__init__(hidden_size, hidden_size, num_answers, rngs=rngs)
        if prior_bias and num_answers > 1:
            bias = self.classifier.bias
            bias[...] = jnp.full(bias.shape, -jnp.log(num_answers - 1.0), bias.dtype)


class PairHead(Classifier):
    """NLVR2: 2-way logits (index 1 = true) from the pooled outputs of the sentence with each of
    its images, concatenated ([batch, images * hidden])."""

    def __init__(self, hidden_size: int, images: int, *, rngs: nnx.Rngs):
        super().__init__(images * hidden_size, hidden_size, 2, rngs=rngs)


# CLIP's cap on the learnt inverse temperature: beyond it the contrastive logits saturate.
MAX_INVERSE_TEMPERATURE = 100.0


class ContrastiveHead(nnx.Module):
    """Projects uni-modal text [CLS] and mean image states to unit vectors of size `dim`, with a
    learnt temperature (ALBEF's initial 0.07) for contrastive logits."""

    def __init__(self, hidden_size: int, dim: int, *, rngs: nnx.Rngs):
        self.text = dense(hidden_size, dim, ('embed', 'mlp'), rngs=rngs)
        self.image = dense(hidden_size, dim, ('embed', 'mlp'), rngs=rngs)
        self.log_inverse_temperature = nnx.Param(jnp.log(jnp.float32(1 / 0.07)))

    def embed_text(self, text_cls: jax.Array) -> jax.Array:
        return _unit(self.text(text_cls).astype(jnp.float32))

    def embed_image(self, image_pooled: jax.Array) -> jax.Array:
        return _unit(self.image(image_pooled).astype(jnp.float32))

    def inverse_temperature(self) -> jax.Array:
        return jnp.minimum(jnp.exp(self.log_inverse_temperature[...]), MAX_INVERSE_TEMPERATURE)


def _unit(x: jax.Array) -> jax.Array:
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-6)


class PatchHead(nnx.Module):
    """Masked patch modelling (SIMLA's image-side XMM): the BERT transform, then one output per
    target the visual tokenizer gives a patch: `outputs` code logits (a quantizer) or values
    (pixel regression), f32."""

    def __init__(self, hidden_size: int, outputs: int, *, rngs: nnx.Rngs):
        self.transform = Transform(hidden_size, rngs=rngs)
        self.output = dense(hidden_size, outputs, ('embed', 'classes'), rngs=rngs)

    def __call__(self, hidden: jax.Array) -> jax.Array:
        return self.output(self.transform(hidden)).astype(jnp.float32)


class ConceptHead(nnx.Module):
    """SIMLA's concept head: keyword logits over the vocabulary [batch, vocab] from the image's
    contrastive unit feature [batch, dim] (pseudo-labelled keywords, `psl`).

    The output bias starts at the logit of `keywords / vocab_size`, each word's share of a
    caption's keywords: the loss sums a binary cross-entropy over the vocabulary, which from
    zero biases would start near 0.69 per word (21,000 for BERT's) and flood Adam's moments
    (see `AnswerHead`)."""

    def __init__(self, dim: int, vocab_size: int, *, rngs: nnx.Rngs, keywords: int = 5):
        self.classifier = dense(dim, vocab_size, ('mlp', 'vocab'), rngs=rngs)
        bias = self.classifier.bias
        prior = min(keywords / vocab_size, 0.5)
        bias[...] = jnp.full(bias.shape, jnp.log(prior / (1 - prior)), bias.dtype)

    def __call__(self, image_feature: jax.Array) -> jax.Array:
        return self.classifier(image_feature).astype(jnp.float32)
