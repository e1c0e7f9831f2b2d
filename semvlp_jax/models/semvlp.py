"""SemVLP: embeddings + shared encoder + pooler + pre-training heads.

`model(batch, mode=..., rngs=...)` encodes an image-text batch in any mode and returns the
hidden states; objectives then apply the heads they need to the positions they score.

The fuse mode is SIMLA's plan over the same layers (see models/encoder.py): the batch's text (as
given: masked for MLM) attends to the *unmasked* image's tokens in every cross-attention layer;
the caption alone through the stack gives the text feature; with a patch head and a patch mask,
the masked image's tokens run through the same stack as queries over the caption's
embedding-layer output (the image-side reconstruction pass). `Encoded.fusion` keeps what further
fused passes need (ITM's pairs, the keyword attention).

The staged mode is MVPTR's plan: the caption (words, then its phrase concepts) and the visual
sequence (`[CLS] object tags [SEP]`, then the regions) each through the uni-modal layers, then
the text and the regions (and the tags with `concepts.keep_tags`) through the joint layers.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from semvlp_jax.data.dims import DataDims
from semvlp_jax.models.concepts import ConceptSettings
from semvlp_jax.models.embeddings import VISUAL_EMBEDDINGS, TextEmbeddings
from semvlp_jax.models.encoder import Mode, SharedEncoder
from semvlp_jax.models.heads import (
    AnswerHead,
    ConceptHead,
    ContrastiveHead,
    MaskedLanguageModelHead,
    MaskedObjectHead,
    MatchingHead,
    PairHead,
    PatchHead,
    Pooler,
)
from semvlp_jax.models.layers import IMAGE_TYPE, Numerics, masked_mean
from semvlp_jax.simla import visual_tokenizer


@dataclasses.dataclass
class Fusion:
    """The inputs of the passes an objective adds over rows of pairs it picks (`SemVLP.match`).

    fuse: the unmasked caption's embedding-layer output [rows, text_len, hidden], the unmasked
    image's tokens [rows, image_len, hidden]. staged: the text's and the image's uni-modal
    outputs (what enters the joint layers). With their masks, the dropout rngs of the step and
    the mode they belong to."""

    caption: jax.Array
    text_mask: jax.Array
    image: jax.Array
    image_mask: jax.Array
    rngs: nnx.Rngs | None
    mode: Mode = 'fuse'


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

    In the fuse mode: `text` is the batch's text fused with the unmasked image, `image` that
    image's tokens (which the text stack reads, not updates), `unimodal_text` the unmasked
    caption's [CLS] through the stack alone, `unimodal_image` and `image_pooled` the image
    [CLS]; `masked_image` [rows, image_len, hidden] the image-side pass of the masked image (with
    a patch head and a patch mask; else None), `fusion` the inputs of further fused passes.
    `momentum`: the teacher's targets for this batch (`simla.targets.Momentum`), set by the
    train step for the objectives that distil; None otherwise.

    In the staged mode: `text` and `image` are the joint stage's outputs (`image` the regions,
    then the tags with `keep_tags`), `text_layers`/`image_layers` the K joint layers' outputs,
    `unimodal_text` and `unimodal_image` the text's and the visual sequence's [CLS] after the
    uni-modal stage, `tags` [rows, tag_len, hidden] the tag segment's uni-modal outputs.

    `sample_key`: a key for the objectives' own draws (hard negatives, grounding picks), set
    per step by the train and eval steps; None when nothing set one.
    """

    text: jax.Array
    image: jax.Array
    pooled: jax.Array
    image_pooled: jax.Array
    text_layers: list[jax.Array]
    image_layers: list[jax.Array]
    unimodal_text: jax.Array
    unimodal_image: jax.Array
    masked_image: jax.Array | None = None
    fusion: Fusion | None = None
    momentum: Any = None
    tags: jax.Array | None = None
    sample_key: jax.Array | None = None


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
            cross_attention=config.get('cross_attention', True),
            separate_visual_layers=config.get('separate_visual_layers', False),
        )
        # Phrase concepts extend the vocabulary after the words; word predictions (MLM, masked
        # tags) score the words only.
        self.num_words = dims.vocab_size - dims.num_phrases
        self.concepts = ConceptSettings.from_config(config)
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
        # SIMLA's heads (config_checks: a patch head needs pixels, a concept head an ITC head).
        tokenizer = visual_tokenizer.from_config(config)
        self.visual_tokenizer = tokenizer  # frozen and seeded: part of the graph, not the state
        self.patch_head = PatchHead(hidden, tokenizer.outputs, rngs=rngs) if tokenizer else None
        self.concept_head = (
            ConceptHead(contrastive_dim, dims.vocab_size, rngs=rngs)
            if config.get('concept_head', False)
            else None
        )

    def __call__(self, batch: dict, *, mode: Mode, rngs: nnx.Rngs | None = None) -> Encoded:
        """Encodes `batch` (text_ids/text_mask [batch, text_len], and region_* fields or pixels)
        in `mode`.

        Image fields with an images axis ([batch, n, regions, ...], [batch, n, height, ...])
        encode the text with each of the n images (see `Encoded`). `rngs=None` means deterministic (no dropout).
        """
        batch = one_row_per_image(batch)
        if mode == 'fuse':
            return self._fuse(batch, rngs)
        if mode == 'staged':
            return self._staged(batch, rngs)
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
        unimodal_image = masked_mean(unimodal_image.astype(jnp.float32), image_mask)
        return self._encoded(out, image_mask, unimodal_text[:, 0], unimodal_image)

    def _encoded(self, out, image_mask, unimodal_text, unimodal_image, **more) -> Encoded:
        """`Encoded` of an encoder output whose text and image rows both reach the heads, with
        the uni-modal features [rows, hidden] and `more` fields."""
        # Heads, logits and losses run in float32 whatever the encoder's compute dtype.
        text, image = out.text.astype(jnp.float32), out.image.astype(jnp.float32)
        return Encoded(
            text=text,
            image=image,
            pooled=self.pooler(text),
            image_pooled=masked_mean(image, image_mask),
            text_layers=out.text_layers,
            image_layers=out.image_layers,
            unimodal_text=unimodal_text.astype(jnp.float32),
            unimodal_image=unimodal_image.astype(jnp.float32),
            **more,
        )

    def _fuse(self, batch: dict, rngs: nnx.Rngs | None) -> Encoded:
        text_mask = batch['text_mask']
        text_in = self.text_embeddings(batch['text_ids'], rngs)
        caption = (
            self.text_embeddings(unmasked_text_ids(batch), rngs)
            if 'mlm_positions' in batch
            else text_in
        )
        unmasked = {key: value for key, value in batch.items() if key != 'patch_mask'}
        image, image_mask = self.visual_embeddings(unmasked, self.text_embeddings.token_type, rngs)
        text, text_layers = self.encoder.fuse(
            text_in, text_mask, image, image_mask, direction='text_to_image', rngs=rngs
        )
        alone = self.encoder.unimodal(caption, text_mask, rngs=rngs, all_layers=True)
        masked_image = None
        if self.patch_head is not None and 'patch_mask' in batch:
            queries, query_mask = self.visual_embeddings(
                batch, self.text_embeddings.token_type, rngs
            )
            masked_image, _ = self.encoder.fuse(
                queries, query_mask, caption, text_mask, direction='image_to_text', rngs=rngs
            )
            masked_image = masked_image.astype(jnp.float32)
        text, image_cls = text.astype(jnp.float32), image[:, 0].astype(jnp.float32)
        return Encoded(
            text=text,
            image=image.astype(jnp.float32),
            pooled=self.pooler(text),
            image_pooled=image_cls,
            text_layers=text_layers,
            image_layers=[],
            unimodal_text=alone[:, 0].astype(jnp.float32),
            unimodal_image=image_cls,
            masked_image=masked_image,
            fusion=Fusion(caption, text_mask, image, image_mask, rngs),
        )

    def _visual_stage(self, batch: dict, rngs) -> tuple[jax.Array, jax.Array]:
        """The staged mode's visual sequence `[CLS] tags [SEP] regions` (tags through the word
        embeddings as type-1 tokens) after the uni-modal stage, and its mask."""
        tag_ids = batch['tag_ids']
        tags = self.text_embeddings(tag_ids, rngs, jnp.full_like(tag_ids, IMAGE_TYPE))
        regions, region_mask = self.visual_embeddings(batch, self.text_embeddings.token_type, rngs)
        visual = jnp.concatenate([tags, regions.astype(tags.dtype)], axis=1)
        mask = jnp.concatenate([batch['tag_mask'], region_mask.astype(batch['tag_mask'].dtype)], 1)
        return self.encoder.unimodal(visual, mask, rngs=rngs, visual=True), mask

    def _staged(self, batch: dict, rngs: nnx.Rngs | None) -> Encoded:
        text_mask = batch['text_mask']
        text_in = self.text_embeddings(batch['text_ids'], rngs)
        text = self.encoder.unimodal(text_in, text_mask, rngs=rngs)
        visual, visual_mask = self._visual_stage(batch, rngs)
        tag_len = batch['tag_ids'].shape[1]
        # Regions first, so that `image[:, :regions]` are the regions with or without the tags;
        # the order means nothing to attention (no positions are added past the embeddings).
        image, image_mask = visual[:, tag_len:], visual_mask[:, tag_len:]
        if self.concepts.keep_tags:  # all but the visual [CLS], as MVPTR's `use_b`
            image = jnp.concatenate([image, visual[:, 1:tag_len]], axis=1)
            image_mask = jnp.concatenate([image_mask, visual_mask[:, 1:tag_len]], axis=1)
        out = self.encoder.joint(text, text_mask, image, image_mask, rngs=rngs)
        return self._encoded(
            out,
            image_mask,
            text[:, 0],
            visual[:, 0],
            tags=visual[:, :tag_len].astype(jnp.float32),
            fusion=Fusion(text, text_mask, image, image_mask, rngs, mode='staged'),
        )

    def match(self, fusion: Fusion, text_rows: jax.Array, image_rows: jax.Array) -> jax.Array:
        """Pooled fused outputs [pairs, hidden] of caption `text_rows[p]` with image
        `image_rows[p]` (fuse and staged modes; ITM's positives and negatives)."""
        text, image = (
            jnp.take(fusion.caption, text_rows, 0),
            jnp.take(fusion.image, image_rows, 0),
        )
        text_mask = jnp.take(fusion.text_mask, text_rows, 0)
        image_mask = jnp.take(fusion.image_mask, image_rows, 0)
        if fusion.mode == 'staged':
            joint = self.encoder.joint(text, text_mask, image, image_mask, rngs=fusion.rngs)
            return self.pooler(joint.text.astype(jnp.float32))
        out, _ = self.encoder.fuse(
            text, text_mask, image, image_mask, direction='text_to_image', rngs=fusion.rngs
        )
        return self.pooler(out.astype(jnp.float32))

    def cls_attention(self, fusion: Fusion) -> jax.Array:
        """The last layer's self-attention of the fused caption's [CLS] over the caption
        [rows, heads, text_len], without dropout (SIMLA's keyword pseudo-labels)."""
        _, after = self.encoder.fuse(
            fusion.caption,
            fusion.text_mask,
            fusion.image,
            fusion.image_mask,
            direction='text_to_image',
            rngs=None,
        )
        last = self.encoder.layer(len(after) - 1)
        x = after[-2] if len(after) > 1 else fusion.caption
        probs, _ = last.self_attention.inspect(x, x, fusion.text_mask)
        return probs[:, :, 0, :]

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

    def embed_texts(self, batch: dict, mode: Mode = 'two') -> jax.Array:
        """Contrastive unit vectors [batch, dim] of texts alone (text_ids, text_mask): what
        `Encoded.unimodal_text` is in `mode` (single and two: the bottom L-K layers; fuse: every
        layer, cross-attention skipped)."""
        text = self.text_embeddings(batch['text_ids'], None)
        all_layers = mode == 'fuse'
        text = self.encoder.unimodal(text, batch['text_mask'], rngs=None, all_layers=all_layers)
        return self.contrastive_head.embed_text(text[:, 0].astype(jnp.float32))

    def embed_images(self, batch: dict, mode: Mode = 'two') -> jax.Array:
        """Contrastive unit vectors [batch, dim] of images alone (region_* fields or pixels):
        `Encoded.unimodal_image` in `mode` (single and two: the mean state after the bottom L-K
        layers; fuse: the vision tower's [CLS]; staged: the visual sequence's [CLS] after the
        uni-modal stage)."""
        if mode == 'staged':
            visual, _ = self._visual_stage(batch, None)
            return self.contrastive_head.embed_image(visual[:, 0].astype(jnp.float32))
        image, mask = self.visual_embeddings(batch, self.text_embeddings.token_type, None)
        if mode == 'fuse':
            return self.contrastive_head.embed_image(image[:, 0].astype(jnp.float32))
        image = self.encoder.unimodal(image, mask, rngs=None)
        return self.contrastive_head.embed_image(masked_mean(image.astype(jnp.float32), mask))


# What the model reads of an example: the text, and the image fields the visual embeddings read.
TEXT_FIELDS = ('text_ids', 'text_mask')
PIXEL_FIELDS = ('pixels', 'patch_mask', 'patch_positions', 'patch_weights')
# Dimensions of one image's fields: region_mask [regions], pixels [height, width, channels].
IMAGE_RANKS = {'region_mask': 1, 'pixels': 3}


def is_image_field(key: str) -> bool:
    return key.startswith(('region_', 'tag_')) or key in PIXEL_FIELDS


def unmasked_text_ids(batch: dict) -> jax.Array:
    """The batch's texts before MLM masking: `text_ids` with each masked slot's target put back
    (`mlm_positions` [batch, slots], `mlm_targets`, `mlm_weights` 0 for unused slots)."""
    ids, positions = jnp.asarray(batch['text_ids']), batch['mlm_positions']
    current = jnp.take_along_axis(ids, positions, axis=1)
    restored = jnp.where(batch['mlm_weights'] > 0, batch['mlm_targets'], current)
    rows = jnp.arange(ids.shape[0])[:, None]
    return ids.at[rows, positions].set(restored.astype(ids.dtype))


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
