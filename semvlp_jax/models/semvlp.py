"""SemVLP: embeddings + shared encoder + pooler + pre-training heads.

`model(batch, mode=..., rngs=...)` encodes an image-text batch in either mode and returns the
hidden states; objectives then apply the heads they need to the positions they score.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from semvlp_jax.models.embeddings import VISUAL_EMBEDDINGS, TextEmbeddings
from semvlp_jax.models.encoder import Mode, SharedEncoder
from semvlp_jax.models.heads import (
    AnswerHead,
    MaskedLanguageModelHead,
    MaskedObjectHead,
    MatchingHead,
    Pooler,
)
from semvlp_jax.models.layers import masked_mean

# Parameter subtrees that only the two-stream mode reads: the pluggable cross-attention blocks.
TWO_STREAM_ONLY = 'cross_attention'


@dataclasses.dataclass(frozen=True)
class DataDims:
    """Sizes the model takes from the data rather than from the config."""

    vocab_size: int
    max_text_len: int
    visual_feature_dim: int
    num_object_labels: int
    num_attribute_labels: int
    num_answers: int


@dataclasses.dataclass
class Encoded:
    """What the encoder gives the objectives.

    text [batch, text_len, hidden]; image [batch, image_len, hidden]; pooled [batch, hidden]
    (pooler on the text [CLS]); image_pooled [batch, hidden] (mean over real image tokens).
    """

    text: jax.Array
    image: jax.Array
    pooled: jax.Array
    image_pooled: jax.Array
    text_layers: list[jax.Array]
    image_layers: list[jax.Array]


class SemVLP(nnx.Module):
    def __init__(self, config: ml_collections.ConfigDict, dims: DataDims, *, rngs: nnx.Rngs):
        hidden = config.hidden_size
        dtype = jnp.dtype(config.dtype)  # compute dtype of embeddings and encoder; heads use f32
        self.text_embeddings = TextEmbeddings(
            dims.vocab_size, hidden, dims.max_text_len, config.dropout_rate, rngs=rngs, dtype=dtype
        )
        self.visual_embeddings = VISUAL_EMBEDDINGS[config.visual_input](config, dims, rngs=rngs)
        self.encoder = SharedEncoder(
            num_layers=config.num_layers,
            num_cross_layers=config.num_cross_layers,
            hidden_size=hidden,
            num_heads=config.num_heads,
            mlp_size=config.mlp_size,
            dropout_rate=config.dropout_rate,
            share_cross_attention=config.share_cross_attention,
            rngs=rngs,
            dtype=dtype,
            remat=config.remat,
            scan_layers=config.scan_layers,
        )
        self.pooler = Pooler(hidden, rngs=rngs)
        self.mlm_head = MaskedLanguageModelHead(hidden, dims.vocab_size, rngs=rngs)
        self.object_head = MaskedObjectHead(
            hidden,
            dims.visual_feature_dim,
            dims.num_object_labels,
            dims.num_attribute_labels,
            rngs=rngs,
        )
        self.matching_head = MatchingHead(hidden, rngs=rngs)
        self.answer_head = AnswerHead(hidden, dims.num_answers, rngs=rngs)

    def __call__(self, batch: dict, *, mode: Mode, rngs: nnx.Rngs | None = None) -> Encoded:
        """Encodes `batch` (text_ids/text_mask [batch, text_len], region_* fields) in `mode`.

        `rngs=None` means deterministic (no dropout).
        """
        text = self.text_embeddings(batch['text_ids'], rngs)
        image, image_mask = self.visual_embeddings(batch, self.text_embeddings.token_type, rngs)
        out = self.encoder(text, batch['text_mask'], image, image_mask, mode=mode, rngs=rngs)
        # Heads, logits and losses run in float32 whatever the encoder's compute dtype.
        text, image = out.text.astype(jnp.float32), out.image.astype(jnp.float32)
        return Encoded(
            text=text,
            image=image,
            pooled=self.pooler(text),
            image_pooled=masked_mean(image, image_mask),
            text_layers=out.text_layers,
            image_layers=out.image_layers,
        )
