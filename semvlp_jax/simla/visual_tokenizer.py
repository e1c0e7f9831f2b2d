"""Targets for masked patch modelling, through one `VisualTokenizer` interface.

SIMLA predicts DALL-E dVAE codes of the image (8,192 of them), whose weights cannot be fetched
here. Two honest substitutes:
- `RandomProjectionQuantizer` (the default; BEST-RQ's idea): each patch, normalised by its own
  mean and spread, is projected by a frozen random matrix and labelled with its nearest code of
  a frozen random codebook (cosine). Both come from a seed, so the codes are a fixed function of
  the pixels, like the dVAE's; it keeps SIMLA's 8,192-way classification head and so the soft
  targets its momentum distillation needs.
- `PixelRegression` (MAE): the target is the patch's normalised pixels themselves.
Both read the same view of the image the model does (SIMLA takes a second, independent crop at
128 px for the dVAE; one view keeps target and input aligned patch for patch).
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

import jax
import jax.numpy as jnp
import ml_collections

from semvlp_jax.models.vision import patchify


class VisualTokenizer(Protocol):
    kind: str  # 'classes' (integer codes, cross-entropy) or 'regression' (values, squared error)

    @property
    def outputs(self) -> int:
        """What the patch head predicts per patch: the number of codes, or of target values."""
        ...

    def targets(self, pixels: jax.Array) -> jax.Array:
        """pixels [batch, H, W, 3] -> per-patch targets [batch, patches(, ...)]."""
        ...


def normalised_patches(pixels: jax.Array, patch_size: int, eps: float = 1e-6) -> jax.Array:
    """[batch, patches, P*P*3]: each patch minus its mean, over its standard deviation (MAE)."""
    patches = patchify(pixels.astype(jnp.float32), patch_size)
    mean = patches.mean(axis=-1, keepdims=True)
    var = patches.var(axis=-1, keepdims=True)
    return (patches - mean) / jnp.sqrt(var + eps)


@dataclasses.dataclass(frozen=True)
class RandomProjectionQuantizer:
    """Frozen codes: nearest of `codes` random unit vectors to a random projection of the
    normalised patch. Nothing here trains or is checkpointed: the seed rebuilds it."""

    patch_size: int
    codes: int = 8192
    dim: int = 32
    seed: int = 0
    kind: str = 'classes'

    @property
    def outputs(self) -> int:
        return self.codes

    def _frozen(self) -> tuple[jax.Array, jax.Array]:
        patch_dim = self.patch_size**2 * 3
        projection_key, codebook_key = jax.random.split(jax.random.key(self.seed))
        projection = jax.random.normal(projection_key, (patch_dim, self.dim)) / jnp.sqrt(patch_dim)
        codebook = jax.random.normal(codebook_key, (self.codes, self.dim))
        return projection, codebook / jnp.linalg.norm(codebook, axis=-1, keepdims=True)

    def targets(self, pixels: jax.Array) -> jax.Array:
        """int32 [batch, patches]."""
        projection, codebook = self._frozen()
        projected = normalised_patches(pixels, self.patch_size) @ projection
        projected = projected / (jnp.linalg.norm(projected, axis=-1, keepdims=True) + 1e-6)
        return jnp.argmax(projected @ codebook.T, axis=-1).astype(jnp.int32)


@dataclasses.dataclass(frozen=True)
class PixelRegression:
    """Targets are the normalised patches: float32 [batch, patches, P*P*3]."""

    patch_size: int
    kind: str = 'regression'

    @property
    def outputs(self) -> int:
        return self.patch_size**2 * 3

    def targets(self, pixels: jax.Array) -> jax.Array:
        return normalised_patches(pixels, self.patch_size)


VISUAL_TOKENIZERS = {'random_projection': RandomProjectionQuantizer, 'pixels': PixelRegression}


def from_config(model: ml_collections.ConfigDict) -> VisualTokenizer | None:
    """The tokenizer `config.model.patch_head` names (`tokenizer` plus its settings: `codes`,
    `dim`, `seed` for the quantizer), or None when the model has no patch head."""
    head = dict(model.get('patch_head') or {})
    if not head:
        return None
    cls = VISUAL_TOKENIZERS[head.pop('tokenizer', 'random_projection')]  # name: config_checks
    return cls(patch_size=model.patch_size, **head)
