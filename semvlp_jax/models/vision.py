"""Pixels in: ViT patch embedding, an optional ViT tower of its own, then the encoder's width.

`config.model.visual_input='patches'` reads `pixels` [batch, image_size, image_size, 3]
(normalised, see `data/pixels.py`) and gives `1 + grid**2` image tokens: an image [CLS] then the
patches in row-major order (grid = image_size / patch_size).

- The patch embedding is a dense layer over each flattened P x P x 3 patch (row, column,
  channel order), so a ViT checkpoint's HWIO conv kernel [P, P, 3, D] is that layer's kernel
  reshaped to [P*P*3, D] and the two compute the same thing.
- `batch['patch_mask']` [batch, grid**2] (block masking, `data/masking.py`) replaces the masked
  patches' embeddings by a learned mask token *before* the position embeddings are added, so a
  masked patch still says where it is (BEiT).
- `config.model.vision_tower.num_layers == 0`: the shared encoder reads the patch tokens directly
  (SemVLP with pixels). `> 0`: a ViT stack of that depth and `width` (pre-LN, as ViT, final
  LayerNorm) runs first, as in SIMLA and ALBEF, and a projection takes its output to the
  encoder's width when the two differ.
- Either way the tokens then get the image type embedding and a LayerNorm, as the text side
  has, so both modalities enter the post-LN encoder at one scale.

Parameter names follow the ViT checkpoints' structure so the import table (`weights/vit.py`) is
one line per tensor: `patch` (kernel, bias), `cls` [width], `position` [1 + grid**2, width] (the
[CLS] row first, as timm and HF store it), `tower/blocks/<i>/{norm1, attention/{query, key,
value, output}, norm2, mlp/{expand, contract}}`, `tower/norm`.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from semvlp_jax.models.encoder import REMAT_POLICIES
from semvlp_jax.models.layers import (
    EMBEDDING_INIT,
    IMAGE_TYPE,
    dense,
    dropout,
    layer_norm,
    logical,
)

CHANNELS = 3


@dataclasses.dataclass(frozen=True)
class TowerConfig:
    """`config.model.vision_tower`: depth 0 means no tower (patch tokens go to the encoder)."""

    num_layers: int = 0
    width: int = 768
    num_heads: int = 12
    mlp_size: int = 3072
    layer_norm_eps: float = 1e-6  # ViT / DeiT (timm); HF's ViTConfig default is 1e-12

    @classmethod
    def from_config(cls, model: ml_collections.ConfigDict) -> TowerConfig:
        tower = model.get('vision_tower') or {}
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in dict(tower).items() if k in fields})  # unknown: checks


TOWER_KEYS = tuple(f.name for f in dataclasses.fields(TowerConfig))


def grid_size(model: ml_collections.ConfigDict) -> int:
    """Patches per side (`image_size / patch_size`; config_checks requires it to divide)."""
    return model.image_size // model.patch_size


def patchify(pixels: jax.Array, patch_size: int) -> jax.Array:
    """[batch, H, W, 3] -> [batch, (H/P) * (W/P), P*P*3]: patches in row-major order, each
    flattened in (row, column, channel) order, the order of an HWIO kernel's first three axes."""
    batch, height, width, channels = pixels.shape
    p = patch_size
    x = pixels.reshape(batch, height // p, p, width // p, p, channels)
    x = x.transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(batch, (height // p) * (width // p), p * p * channels)


class PreNormAttention(nnx.Module):
    """Multi-head self-attention of a pre-LN block: no residual, no LayerNorm inside."""

    def __init__(self, width: int, num_heads: int, *, rngs: nnx.Rngs, dtype: jnp.dtype):
        self.num_heads = num_heads
        self.query = dense(width, width, ('embed', 'heads'), rngs=rngs, dtype=dtype)
        self.key = dense(width, width, ('embed', 'heads'), rngs=rngs, dtype=dtype)
        self.value = dense(width, width, ('embed', 'heads'), rngs=rngs, dtype=dtype)
        self.output = dense(width, width, ('heads', 'embed'), rngs=rngs, dtype=dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        batch, length, width = x.shape

        def heads(y):
            return y.reshape(batch, length, self.num_heads, width // self.num_heads)

        q, k, v = heads(self.query(x)), heads(self.key(x)), heads(self.value(x))
        return self.output(jax.nn.dot_product_attention(q, k, v).reshape(batch, length, width))


class Mlp(nnx.Module):
    def __init__(self, width: int, mlp_size: int, *, rngs: nnx.Rngs, dtype: jnp.dtype):
        self.expand = dense(width, mlp_size, ('embed', 'mlp'), rngs=rngs, dtype=dtype)
        self.contract = dense(mlp_size, width, ('mlp', 'embed'), rngs=rngs, dtype=dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.contract(jax.nn.gelu(self.expand(x), approximate=False))  # ViT: exact GELU


class VitBlock(nnx.Module):
    """x + attention(LN(x)), then x + MLP(LN(x)): the ViT layer (pre-LN, unlike BERT's)."""

    def __init__(
        self, tower: TowerConfig, dropout_rate: float, *, rngs: nnx.Rngs, dtype: jnp.dtype
    ):
        eps = tower.layer_norm_eps
        self.norm1 = layer_norm(tower.width, rngs=rngs, eps=eps, dtype=dtype)
        self.attention = PreNormAttention(tower.width, tower.num_heads, rngs=rngs, dtype=dtype)
        self.norm2 = layer_norm(tower.width, rngs=rngs, eps=eps, dtype=dtype)
        self.mlp = Mlp(tower.width, tower.mlp_size, rngs=rngs, dtype=dtype)
        self.dropout = nnx.Dropout(dropout_rate)

    def __call__(self, x: jax.Array, rngs: nnx.Rngs | None) -> jax.Array:
        x = x + dropout(self.attention(self.norm1(x)), self.dropout, rngs)
        return x + dropout(self.mlp(self.norm2(x)), self.dropout, rngs)


class VisionTower(nnx.Module):
    """A ViT encoder: pre-LN blocks over [CLS] + patch tokens, then a final LayerNorm."""

    def __init__(
        self,
        tower: TowerConfig,
        dropout_rate: float,
        *,
        rngs: nnx.Rngs,
        dtype: jnp.dtype = jnp.float32,
        remat: str = 'none',
    ):
        self.remat = remat
        self.blocks = nnx.List(
            [VitBlock(tower, dropout_rate, rngs=rngs, dtype=dtype) for _ in range(tower.num_layers)]
        )
        self.norm = layer_norm(tower.width, rngs=rngs, eps=tower.layer_norm_eps, dtype=dtype)

    def __call__(self, x: jax.Array, rngs: nnx.Rngs | None) -> jax.Array:
        def step(block, x, rngs):
            return block(x, rngs)

        if self.remat != 'none':
            step = nnx.remat(step, policy=REMAT_POLICIES[self.remat])
        for block in self.blocks:
            x = step(block, x, rngs)
        return self.norm(x)


class PatchEmbeddings(nnx.Module):
    """pixels -> ([batch, 1 + grid**2, hidden] image tokens, [batch, 1 + grid**2] mask)."""

    def __init__(
        self,
        model: ml_collections.ConfigDict,
        *,
        rngs: nnx.Rngs,
    ):
        hidden, dtype = model.hidden_size, jnp.dtype(model.dtype)
        self.dtype = dtype
        self.patch_size = model.patch_size
        self.tower_config = tower = TowerConfig.from_config(model)
        width = tower.width if tower.num_layers else hidden
        num_patches = grid_size(model) ** 2
        patch_dim = model.patch_size**2 * CHANNELS
        self.patch = dense(patch_dim, width, (None, 'embed'), rngs=rngs, dtype=dtype)
        self.cls = nnx.Param(logical(EMBEDDING_INIT, 'embed')(rngs.params(), (width,)))
        self.mask_token = nnx.Param(logical(EMBEDDING_INIT, 'embed')(rngs.params(), (width,)))
        self.position = nnx.Param(
            logical(EMBEDDING_INIT, None, 'embed')(rngs.params(), (1 + num_patches, width))
        )
        self.tower = (
            VisionTower(tower, model.dropout_rate, rngs=rngs, dtype=dtype, remat=model.remat)
            if tower.num_layers
            else None
        )
        self.projection = (
            dense(width, hidden, ('embed', 'embed'), rngs=rngs, dtype=dtype)
            if width != hidden
            else None
        )
        self.norm = layer_norm(hidden, rngs=rngs)
        self.dropout = nnx.Dropout(model.dropout_rate)

    def tokens(self, pixels: jax.Array, patch_mask: jax.Array | None, rngs) -> jax.Array:
        """The tower's input (or, without a tower, the encoder's before the type embedding):
        [batch, 1 + grid**2, width] = ([CLS], patches with masked ones replaced) + positions."""
        x = self.patch(patchify(pixels.astype(self.dtype), self.patch_size))
        if patch_mask is not None:
            masked = patch_mask.astype(bool)[..., None]
            x = jnp.where(masked, self.mask_token[...].astype(x.dtype), x)
        cls = jnp.broadcast_to(self.cls[...].astype(x.dtype), (x.shape[0], 1, x.shape[-1]))
        return jnp.concatenate([cls, x], axis=1) + self.position[...].astype(x.dtype)

    def vision_states(self, pixels: jax.Array) -> jax.Array:
        """What a ViT model computes, without dropout: the tower's output [batch, 1 + grid**2,
        width] after its final LayerNorm (HF `ViTModel.last_hidden_state`); the parity check
        against imported ViT checkpoints. Needs a tower."""
        return self.tower(self.tokens(pixels, None, None), None)

    def __call__(
        self, batch: dict, type_embedding: nnx.Embed, rngs: nnx.Rngs | None
    ) -> tuple[jax.Array, jax.Array]:
        x = self.tokens(batch['pixels'], batch.get('patch_mask'), rngs)
        if self.tower is not None:
            x = self.tower(dropout(x, self.dropout, rngs), rngs)
        if self.projection is not None:
            x = self.projection(x)
        x = x.astype(jnp.float32) + type_embedding(jnp.full(x.shape[:2], IMAGE_TYPE))
        x = dropout(self.norm(x).astype(self.dtype), self.dropout, rngs)
        return x, jnp.ones(x.shape[:2], jnp.int32)
