"""Input embeddings: BERT-layout text embedding and visual embeddings chosen by name.

A visual embedding maps the batch's image fields to `([batch, image_len, hidden], [batch,
image_len])` (tokens and padding mask). `VISUAL_EMBEDDINGS` maps `config.model.visual_input` to
a builder `(model_config, data_dims, rngs) -> module`: detector regions (`RegionEmbeddings`) or
ViT patches over pixels (`vision.PatchEmbeddings`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from semvlp_jax.models.layers import (
    BERT_NUMERICS,
    EMBEDDING_INIT,
    IMAGE_TYPE,
    TEXT_TYPE,
    Numerics,
    dense,
    dropout,
    layer_norm,
    logical,
)
from semvlp_jax.models.vision import PatchEmbeddings


class TextEmbeddings(nnx.Module):
    """word + position + token-type embedding, LayerNorm, dropout (BERT names and layout)."""

    def __init__(
        self,
        vocab_size: int,
        hidden_size: int,
        max_text_len: int,
        dropout_rate: float,
        *,
        rngs: nnx.Rngs,
        dtype: jnp.dtype = jnp.float32,
        numerics: Numerics = BERT_NUMERICS,
    ):
        self.dtype = dtype  # of the output; the sum and LayerNorm statistics stay float32
        self.word = nnx.Embed(
            vocab_size,
            hidden_size,
            embedding_init=logical(EMBEDDING_INIT, 'vocab', 'embed'),
            rngs=rngs,
        )
        self.position = nnx.Embed(
            max_text_len,
            hidden_size,
            embedding_init=logical(EMBEDDING_INIT, None, 'embed'),
            rngs=rngs,
        )
        # The type table is shared with the visual side (type id 1 marks image tokens).
        self.token_type = nnx.Embed(
            2, hidden_size, embedding_init=logical(EMBEDDING_INIT, None, 'embed'), rngs=rngs
        )
        self.norm = layer_norm(hidden_size, rngs=rngs, eps=numerics.layer_norm_eps)
        self.dropout = nnx.Dropout(dropout_rate)

    def __call__(
        self, text_ids: jax.Array, rngs: nnx.Rngs | None, token_type_ids: jax.Array | None = None
    ) -> jax.Array:
        """text_ids [batch, text_len] -> [batch, text_len, hidden].

        Every text is type 0 (image tokens are type 1) unless `token_type_ids` [batch, text_len]
        says otherwise: BERT's sentence A / B, for a text-only pass over BERT's own inputs."""
        positions = jnp.arange(text_ids.shape[1])
        if token_type_ids is None:
            token_type_ids = jnp.full_like(text_ids, TEXT_TYPE)
        x = self.word(text_ids) + self.position(positions)[None] + self.token_type(token_type_ids)
        return dropout(self.norm(x).astype(self.dtype), self.dropout, rngs)


class RegionEmbeddings(nnx.Module):
    """Detector region features and boxes, LXMERT style: (LN(W_f feat) + LN(W_b box)) / 2.

    Boxes are (x1, y1, x2, y2) normalised to [0, 1]; width and height are appended here so the
    box projection sees 6 numbers. Regions get token type 1 and no 1-D position.

    The average of two unit-scale LayerNorm outputs has about 1/sqrt(2) of the text embeddings'
    scale (`diag_region_to_text_scale` ~0.7 at initialisation); `normalise_output=True` adds a
    LayerNorm over the sum with the type embedding, as the text side has, so both modalities
    enter the encoder at one scale (`config.model.region_norm='layer_norm'`).

    The projections have no bias: a masked (zeroed) region then projects to exactly 0 whatever
    the weights, so LayerNorm's huge gradient at a constant input (1/sqrt(eps)) reaches no
    parameter. With a bias, that gradient lands on the bias and dominates the global norm.
    """

    def __init__(
        self,
        feature_dim: int,
        hidden_size: int,
        dropout_rate: float,
        *,
        rngs: nnx.Rngs,
        dtype: jnp.dtype = jnp.float32,
        normalise_output: bool = False,
    ):
        self.dtype = dtype  # of the output; the projections and LayerNorms stay float32
        self.feature = dense(
            feature_dim, hidden_size, ('visual_features', 'embed'), use_bias=False, rngs=rngs
        )
        self.feature_norm = layer_norm(hidden_size, rngs=rngs)
        self.box = dense(6, hidden_size, (None, 'embed'), use_bias=False, rngs=rngs)
        self.box_norm = layer_norm(hidden_size, rngs=rngs)
        self.output_norm = layer_norm(hidden_size, rngs=rngs) if normalise_output else None
        self.dropout = nnx.Dropout(dropout_rate)

    def __call__(
        self, batch: dict, type_embedding: nnx.Embed, rngs: nnx.Rngs | None
    ) -> tuple[jax.Array, jax.Array]:
        boxes = batch['region_boxes']
        sizes = boxes[..., 2:] - boxes[..., :2]
        boxes = jnp.concatenate([boxes, sizes], axis=-1)
        x = (
            self.feature_norm(self.feature(batch['region_features']))
            + self.box_norm(self.box(boxes))
        ) / 2
        x = x + type_embedding(jnp.full(x.shape[:2], IMAGE_TYPE))
        if self.output_norm is not None:
            x = self.output_norm(x)
        return dropout(x.astype(self.dtype), self.dropout, rngs), batch['region_mask']


def _regions(config, dims, *, rngs: nnx.Rngs) -> RegionEmbeddings:
    return RegionEmbeddings(
        dims.visual_feature_dim,
        config.hidden_size,
        config.dropout_rate,
        rngs=rngs,
        dtype=jnp.dtype(config.dtype),
        normalise_output=config.get('region_norm', 'average') == 'layer_norm',
    )


# How region embeddings are scaled (`config.model.region_norm`): LXMERT's average of the two
# normalised projections, or that average normalised again (the text embeddings' scale).
REGION_NORMS = ('average', 'layer_norm')


def _patches(config, dims, *, rngs: nnx.Rngs) -> PatchEmbeddings:
    del dims  # the patch grid comes from the model config (image_size, patch_size)
    return PatchEmbeddings(config, rngs=rngs)


VISUAL_EMBEDDINGS = {'regions': _regions, 'patches': _patches}
