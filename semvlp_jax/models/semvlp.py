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

from semvlp_jax.data.dims import DataDims
from semvlp_jax.models.embeddings import VISUAL_EMBEDDINGS, TextEmbeddings
from semvlp_jax.models.encoder import Mode, SharedEncoder
from semvlp_jax.models.heads import (
    AnswerHead,
    ContrastiveHead,
    MaskedLanguageModelHead,
    MaskedObjectHead,
    MatchingHead,
    PairHead,
    Pooler,
)
from semvlp_jax.models.layers import Numerics, masked_mean


@dataclasses.dataclass
class Encoded:
    """What the encoder gives the objectives.

    text [rows, text_len, hidden]; image [rows, image_len, hidden]; pooled [rows, hidden]
    (pooler on the text [CLS]); image_pooled [rows, hidden] (mean over real image tokens).
    unimodal_text [rows, hidden] and unimodal_image [rows, hidden]: the text [CLS] and the mean
    image state after the bottom L-K layers run on each modality alone (see
    `SharedEncoder.unimodal`); in single-stream mode they cost a separate pass, which jit drops
    when no objective reads them. A row is one image-text pair: an example with n images is n
    rows (example i's rows are i*n ... i*n + n-1).
    """

    text: jax.Array
    image: jax.Array
    pooled: jax.Array
    image_pooled: jax.Array
    text_layers: list[jax.Array]
    image_layers: list[jax.Array]
    unimodal_text: jax.Array
    unimodal_image: jax.Array


class SemVLP(nnx.Module):
    def __init__(self, config: ml_collections.ConfigDict, dims: DataDims, *, rngs: nnx.Rngs):
        hidden = config.hidden_size
        dtype = jnp.dtype(config.dtype)  # compute dtype of embeddings and encoder; heads use f32
        numerics = Numerics.from_config(config)  # GELU and LayerNorm epsilon of the BERT parts
        self.text_embeddings = TextEmbeddings(
            dims.vocab_size,
            hidden,
            dims.max_text_len,
            config.dropout_rate,
            rngs=rngs,
            dtype=dtype,
            numerics=numerics,
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
            numerics=numerics,
        )
        self.pooler = Pooler(hidden, rngs=rngs)
        self.mlm_head = MaskedLanguageModelHead(
            hidden, dims.vocab_size, rngs=rngs, numerics=numerics
        )
        self.object_head = MaskedObjectHead(
            hidden,
            dims.visual_feature_dim,
            dims.num_object_labels,
            dims.num_attribute_labels,
            rngs=rngs,
        )
        self.matching_head = MatchingHead(hidden, rngs=rngs)
        self.answer_head = AnswerHead(
            hidden,
            dims.num_answers,
            rngs=rngs,
            prior_bias=config.get('answer_bias', 'zero') == 'prior',
        )
        # Task heads exist only where the data or the config asks for them.
        self.pair_head = (
            PairHead(hidden, dims.images_per_example, rngs=rngs)
            if dims.images_per_example > 1
            else None
        )
        contrastive_dim = config.get('contrastive_dim', 0)
        self.contrastive_head = (
            ContrastiveHead(hidden, contrastive_dim, rngs=rngs) if contrastive_dim else None
        )

    def __call__(self, batch: dict, *, mode: Mode, rngs: nnx.Rngs | None = None) -> Encoded:
        """Encodes `batch` (text_ids/text_mask [batch, text_len], and region_* fields or pixels)
        in `mode`.

        Image fields with an images axis ([batch, n, regions, ...], [batch, n, height, ...])
        encode the text with each of the n images (see `Encoded`). `rngs=None` means deterministic (no dropout).
        """
        batch = one_row_per_image(batch)
        text_in = self.text_embeddings(batch['text_ids'], rngs)
        image_in, image_mask = self.visual_embeddings(batch, self.text_embeddings.token_type, rngs)
        out = self.encoder(text_in, batch['text_mask'], image_in, image_mask, mode=mode, rngs=rngs)
        bottom = self.encoder.num_unimodal_layers
        if mode == 'two':  # the two-stream bottom layers are the uni-modal pass
            unimodal_text = out.text_layers[bottom - 1] if bottom else text_in
            unimodal_image = out.image_layers[bottom - 1] if bottom else image_in
        else:
            unimodal_text = self.encoder.unimodal(text_in, batch['text_mask'], rngs=rngs)
            unimodal_image = self.encoder.unimodal(image_in, image_mask, rngs=rngs)
        # Heads, logits and losses run in float32 whatever the encoder's compute dtype.
        text, image = out.text.astype(jnp.float32), out.image.astype(jnp.float32)
        return Encoded(
            text=text,
            image=image,
            pooled=self.pooler(text),
            image_pooled=masked_mean(image, image_mask),
            text_layers=out.text_layers,
            image_layers=out.image_layers,
            unimodal_text=unimodal_text[:, 0].astype(jnp.float32),
            unimodal_image=masked_mean(unimodal_image.astype(jnp.float32), image_mask),
        )

    def encode_text(
        self, text_ids: jax.Array, text_mask: jax.Array, token_type_ids: jax.Array | None = None
    ) -> tuple[jax.Array, jax.Array]:
        """What a BERT model computes on text alone, without dropout: the states [batch, len,
        hidden] after every layer's self-attention and FFN (cross-attention skipped) and the
        pooled [CLS] [batch, hidden]. The parity check against imported BERT checkpoints."""
        text = self.text_embeddings(text_ids, None, token_type_ids)
        text = self.encoder.unimodal(text, text_mask, rngs=None, all_layers=True)
        text = text.astype(jnp.float32)
        return text, self.pooler(text)

    def embed_texts(self, batch: dict) -> jax.Array:
        """Contrastive unit vectors [batch, dim] of texts alone (text_ids, text_mask)."""
        text = self.text_embeddings(batch['text_ids'], None)
        text = self.encoder.unimodal(text, batch['text_mask'], rngs=None)
        return self.contrastive_head.embed_text(text[:, 0].astype(jnp.float32))

    def embed_images(self, batch: dict) -> jax.Array:
        """Contrastive unit vectors [batch, dim] of images alone (region_* fields or pixels)."""
        image, mask = self.visual_embeddings(batch, self.text_embeddings.token_type, None)
        image = self.encoder.unimodal(image, mask, rngs=None)
        return self.contrastive_head.embed_image(masked_mean(image.astype(jnp.float32), mask))


# What the model reads of an example: the text, and the image fields the visual embeddings read.
TEXT_FIELDS = ('text_ids', 'text_mask')
PIXEL_FIELDS = ('pixels', 'patch_mask')
# Dimensions of one image's fields: region_mask [regions], pixels [height, width, channels].
IMAGE_RANKS = {'region_mask': 1, 'pixels': 3}


def is_image_field(key: str) -> bool:
    return key.startswith('region_') or key in PIXEL_FIELDS


def one_row_per_image(batch: dict) -> dict:
    """An example with n images (`region_mask` [batch, n, regions] or `pixels` [batch, n, height,
    width, 3]) -> n rows, each the example's text with one of its images (example i -> rows
    i*n ... i*n + n-1). Other batches unchanged."""
    key = 'pixels' if 'pixels' in batch else 'region_mask'
    if batch[key].ndim == IMAGE_RANKS[key] + 1:
        return batch
    size, images = batch[key].shape[:2]
    rows = dict(batch)
    for key, value in batch.items():
        if key in TEXT_FIELDS:
            rows[key] = jnp.repeat(value, images, axis=0)
        elif is_image_field(key):
            rows[key] = value.reshape(size * images, *value.shape[2:])
    return rows
