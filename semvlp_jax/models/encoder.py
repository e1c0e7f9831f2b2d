"""The shared encoder: one stack of layers read in single-stream or two-stream mode.

single: image and text tokens are concatenated (image first, as in StructVBERT) and every layer
        runs joint self-attention; cross-attention blocks are skipped.
two:    every layer runs on text and image separately with the same weights; in the top K
        layers, after self-attention, text attends to image and image attends to text
        (both directions read the states from before the exchange), then the FFN.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import jax
import jax.numpy as jnp
from flax import nnx

from semvlp_jax.models.layers import Attention, FeedForward

Mode = Literal['single', 'two']
MODES: tuple[Mode, ...] = ('single', 'two')

# What a layer keeps for the backward pass (`config.model.remat`): everything (`none`), nothing
# (`full`: recompute the layer), or only matmul outputs without a batch dimension (`dots`).
REMAT_POLICIES = {
    'none': None,
    'full': jax.checkpoint_policies.nothing_saveable,
    'dots': jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


class CrossAttention(nnx.Module):
    """The pluggable cross-modal block of one layer: text->image and image->text attention.

    With `shared=True` both directions use one set of weights (the default); otherwise each
    direction has its own.
    """

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        dropout_rate: float,
        shared: bool,
        *,
        rngs: nnx.Rngs,
        dtype: jnp.dtype = jnp.float32,
    ):
        def attention():
            return Attention(hidden_size, num_heads, dropout_rate, rngs=rngs, dtype=dtype)

        self.text_to_image = attention()
        self.image_to_text = None if shared else attention()

    def __call__(self, text, text_mask, image, image_mask, rngs):
        image_to_text = self.image_to_text or self.text_to_image
        return (
            self.text_to_image(text, image, image_mask, rngs),
            image_to_text(image, text, text_mask, rngs),
        )


class EncoderLayer(nnx.Module):
    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        mlp_size: int,
        dropout_rate: float,
        with_cross_attention: bool,
        share_cross_attention: bool,
        *,
        rngs: nnx.Rngs,
        dtype: jnp.dtype = jnp.float32,
    ):
        self.self_attention = Attention(
            hidden_size, num_heads, dropout_rate, rngs=rngs, dtype=dtype
        )
        self.cross_attention = (
            CrossAttention(
                hidden_size,
                num_heads,
                dropout_rate,
                share_cross_attention,
                rngs=rngs,
                dtype=dtype,
            )
            if with_cross_attention
            else None
        )
        self.feed_forward = FeedForward(hidden_size, mlp_size, dropout_rate, rngs=rngs, dtype=dtype)

    def single(self, x: jax.Array, mask: jax.Array, rngs) -> jax.Array:
        return self.feed_forward(self.self_attention(x, x, mask, rngs), rngs)

    def two(self, text, text_mask, image, image_mask, rngs) -> tuple[jax.Array, jax.Array]:
        text = self.self_attention(text, text, text_mask, rngs)
        image = self.self_attention(image, image, image_mask, rngs)
        if self.cross_attention is not None:
            text, image = self.cross_attention(text, text_mask, image, image_mask, rngs)
        return self.feed_forward(text, rngs), self.feed_forward(image, rngs)


@dataclasses.dataclass
class EncoderOutput:
    """Final and per-layer hidden states, split back into the two modalities in both modes.

    text [batch, text_len, hidden], image [batch, image_len, hidden]; `text_layers[i]` is the text
    after layer i (unused entries cost nothing under jit).
    """

    text: jax.Array
    image: jax.Array
    text_layers: list[jax.Array]
    image_layers: list[jax.Array]


class SharedEncoder(nnx.Module):
    """L layers; the top `num_cross_layers` carry a cross-attention block."""

    def __init__(
        self,
        *,
        num_layers: int,
        num_cross_layers: int,
        hidden_size: int,
        num_heads: int,
        mlp_size: int,
        dropout_rate: float,
        share_cross_attention: bool,
        rngs: nnx.Rngs,
        dtype: jnp.dtype = jnp.float32,
        remat: str = 'none',
    ):
        if not 1 <= num_cross_layers <= num_layers:
            raise ValueError(
                f'num_cross_layers={num_cross_layers} must be in 1..num_layers={num_layers}'
            )
        if remat not in REMAT_POLICIES:
            raise ValueError(f'remat={remat!r}; expected one of {sorted(REMAT_POLICIES)}')
        self.remat = remat
        first_cross = num_layers - num_cross_layers
        self.layers = nnx.List(
            [
                EncoderLayer(
                    hidden_size,
                    num_heads,
                    mlp_size,
                    dropout_rate,
                    i >= first_cross,
                    share_cross_attention,
                    rngs=rngs,
                    dtype=dtype,
                )
                for i in range(num_layers)
            ]
        )

    def __call__(self, text, text_mask, image, image_mask, *, mode: Mode, rngs) -> EncoderOutput:
        if mode == 'single':
            return self._single(text, text_mask, image, image_mask, rngs)
        if mode == 'two':
            return self._two(text, text_mask, image, image_mask, rngs)
        raise ValueError(f'unknown mode {mode!r}; expected one of {MODES}')

    def _per_layer(self, method: str):
        """`method` of a layer as a function of (layer, *inputs), rematerialised per config."""

        def call(layer, *inputs):
            return getattr(layer, method)(*inputs)

        if self.remat == 'none':
            return call
        return nnx.remat(call, policy=REMAT_POLICIES[self.remat])

    def _single(self, text, text_mask, image, image_mask, rngs) -> EncoderOutput:
        image_len = image.shape[1]
        x = jnp.concatenate([image, text], axis=1)
        mask = jnp.concatenate([image_mask, text_mask], axis=1)
        run = self._per_layer('single')
        text_layers, image_layers = [], []
        for layer in self.layers:
            x = run(layer, x, mask, rngs)
            image_layers.append(x[:, :image_len])
            text_layers.append(x[:, image_len:])
        return EncoderOutput(text_layers[-1], image_layers[-1], text_layers, image_layers)

    def _two(self, text, text_mask, image, image_mask, rngs) -> EncoderOutput:
        run = self._per_layer('two')
        text_layers, image_layers = [], []
        for layer in self.layers:
            text, image = run(layer, text, text_mask, image, image_mask, rngs)
            text_layers.append(text)
            image_layers.append(image)
        return EncoderOutput(text, image, text_layers, image_layers)
