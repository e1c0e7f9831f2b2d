"""The shared encoder: one stack of layers read in single-stream or two-stream mode.

single: image and text tokens are concatenated (image first, as in StructVBERT) and every layer
        runs joint self-attention; cross-attention blocks are skipped.
two:    every layer runs on text and image separately with the same weights; in the top K
        layers, after self-attention, text attends to image and image attends to text
        (both directions read the states from before the exchange), then the FFN.
fuse:   one stream of queries (the text, or for SIMLA's image-side pass the patches) runs through
        the layers; in the top K layers, after self-attention, it attends to a *fixed* context
        (the other modality's states, which the layers do not update), then the FFN. K = L is
        SIMLA's single BERT with cross-attention in every layer; K < L is ALBEF's text layers
        followed by fusion layers. `SemVLP` builds the fuse mode's passes (`fuse`).
staged: MVPTR's plan: the bottom L-K layers run each modality alone (the uni-modal stage; the
        visual sequence through layers of its own with `separate_visual_layers`), then the top K
        layers run joint self-attention over both stages' outputs (the cross-modal stage).
        `SemVLP` builds the mode from `unimodal` and `joint`.

The bottom L-K layers of the two-stream mode see one modality only, so `unimodal` runs them on
text or image alone: uni-modal embeddings for contrastive learning and retrieval shortlists,
computed once per text or image instead of once per pair.
"""

from __future__ import annotations

import dataclasses
import functools
import operator
from collections.abc import Callable
from typing import Any, Literal

import jax
import jax.numpy as jnp
from flax import nnx

from semvlp_jax.models.layers import BERT_NUMERICS, Attention, FeedForward, Numerics

Mode = Literal['single', 'two', 'fuse', 'staged']
MODES: tuple[Mode, ...] = ('single', 'two', 'fuse', 'staged')
# Which way a fuse-mode pass attends: text queries over image states, or image queries over text.
Direction = Literal['text_to_image', 'image_to_text']

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
        numerics: Numerics = BERT_NUMERICS,
    ):
        def attention():
            return Attention(
                hidden_size, num_heads, dropout_rate, rngs=rngs, dtype=dtype, numerics=numerics
            )

        self.text_to_image = attention()
        self.image_to_text = None if shared else attention()

    def __call__(self, text, text_mask, image, image_mask, rngs):
        return (
            self.attend('text_to_image', text, image, image_mask, rngs),
            self.attend('image_to_text', image, text, text_mask, rngs),
        )

    def attend(self, direction: Direction, queries, context, context_mask, rngs) -> jax.Array:
        """One direction: `queries` of one modality attend to `context` of the other."""
        if direction == 'text_to_image' or self.image_to_text is None:
            return self.text_to_image(queries, context, context_mask, rngs)
        return self.image_to_text(queries, context, context_mask, rngs)


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
        numerics: Numerics = BERT_NUMERICS,
    ):
        self.self_attention = Attention(
            hidden_size, num_heads, dropout_rate, rngs=rngs, dtype=dtype, numerics=numerics
        )
        self.cross_attention = (
            CrossAttention(
                hidden_size,
                num_heads,
                dropout_rate,
                share_cross_attention,
                rngs=rngs,
                dtype=dtype,
                numerics=numerics,
            )
            if with_cross_attention
            else None
        )
        self.feed_forward = FeedForward(
            hidden_size, mlp_size, dropout_rate, rngs=rngs, dtype=dtype, numerics=numerics
        )

    def single(self, x: jax.Array, mask: jax.Array, rngs) -> jax.Array:
        return self.feed_forward(self.self_attention(x, x, mask, rngs), rngs)

    def two(self, text, text_mask, image, image_mask, rngs) -> tuple[jax.Array, jax.Array]:
        text = self.self_attention(text, text, text_mask, rngs)
        image = self.self_attention(image, image, image_mask, rngs)
        if self.cross_attention is not None:
            text, image = self.cross_attention(text, text_mask, image, image_mask, rngs)
        return self.feed_forward(text, rngs), self.feed_forward(image, rngs)

    def fuse(self, x, mask, context, context_mask, direction: Direction, rngs) -> jax.Array:
        """Self-attention, then (with a cross-attention block) `x` attends to the fixed
        `context` in `direction`, then the FFN."""
        x = self.self_attention(x, x, mask, rngs)
        if self.cross_attention is not None:
            x = self.cross_attention.attend(direction, x, context, context_mask, rngs)
        return self.feed_forward(x, rngs)


class VisualStage(nnx.Module):
    """MVPTR's visual encoder: L-K layers of its own (no cross-attention) that the staged mode
    runs the visual sequence through, where the text runs through the shared bottom layers
    (`config.model.separate_visual_layers`). Unrolled (`layers/<i>`) or one scanned stack
    (`stack`), as the encoder is."""

    def __init__(self, size: int, make_layer: Callable[[nnx.Rngs], EncoderLayer], rngs, scan):
        self.size = size
        self.stack = _stacked(size, make_layer, rngs) if scan else None
        self.layers = None if scan else nnx.List([make_layer(rngs) for _ in range(size)])


VISUAL_STAGE = 'visual_stage'  # the encoder's attribute (and parameter key) for `VisualStage`

# Module types that only some modes read, with those modes: the optimizer finds them in the
# model and gives their parameters no update in a step whose modes do not read them.
MODE_SPECIFIC: dict[type[nnx.Module], tuple[Mode, ...]] = {
    CrossAttention: ('two', 'fuse'),
    VisualStage: ('staged',),
}


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
    """L layers; the top `num_cross_layers` (K) carry a cross-attention block.

    `scan_layers=False`: a list of layers (`encoder/layers/<i>/...`) run by a Python loop.
    `scan_layers=True`: the bottom L-K and the top K layers are two stacks whose parameters have a
    leading `layers` axis (`encoder/stacks/<j>/...`), each run by one `nnx.scan`, so compile time
    and program size stay flat as depth grows. Both layouts compute the same function;
    `stack_layers` converts parameters from the first layout to the second, `unstack_layers` back.
    """

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
        scan_layers: bool = False,
        numerics: Numerics = BERT_NUMERICS,
        cross_attention: bool = True,
        separate_visual_layers: bool = False,
    ):
        # 1 <= num_cross_layers <= num_layers and a known remat policy: config_checks.validate.
        # `cross_attention=False` builds the top K layers without the block (MVPTR's joint
        # layers need none); `separate_visual_layers` adds the staged mode's `VisualStage`.
        self.remat = remat
        self.num_unimodal_layers = num_layers - num_cross_layers

        def layer(with_cross_attention: bool, rngs: nnx.Rngs) -> EncoderLayer:
            return EncoderLayer(
                hidden_size,
                num_heads,
                mlp_size,
                dropout_rate,
                with_cross_attention and cross_attention,
                share_cross_attention,
                rngs=rngs,
                dtype=dtype,
                numerics=numerics,
            )

        first_cross = num_layers - num_cross_layers
        if scan_layers:
            # Layers per stack, bottom first; K == L leaves only the cross-attention stack.
            self.stack_sizes = stack_sizes(num_layers, num_cross_layers)
            with_cross = (False, True)[-len(self.stack_sizes) :]
            self.layers = None
            self.stacks = nnx.List(
                [
                    _stacked(size, functools.partial(layer, cross), rngs)
                    for size, cross in zip(self.stack_sizes, with_cross)
                ]
            )
        else:
            self.stack_sizes = self.stacks = None
            self.layers = nnx.List([layer(i >= first_cross, rngs) for i in range(num_layers)])
        self.visual_stage = (
            VisualStage(
                self.num_unimodal_layers, functools.partial(layer, False), rngs, scan_layers
            )
            if separate_visual_layers
            else None
        )

    def __call__(self, text, text_mask, image, image_mask, *, mode: Mode, rngs) -> EncoderOutput:
        if mode == 'single':
            return self._single(text, text_mask, image, image_mask, rngs)
        if mode == 'two':
            return self._two(text, text_mask, image, image_mask, rngs)
        raise ValueError(
            f'mode {mode!r}: the encoder runs single or two here (fuse: `fuse`; staged: '
            '`unimodal` then `joint`)'
        )

    def fuse(
        self,
        queries: jax.Array,
        query_mask: jax.Array,
        context: jax.Array,
        context_mask: jax.Array,
        *,
        direction: Direction,
        rngs,
    ) -> tuple[jax.Array, list[jax.Array]]:
        """The fuse mode: `queries` [batch, len, hidden] through every layer, attending to the
        fixed `context` [batch, ctx_len, hidden] in the layers with cross-attention. Returns the
        final states and the states after each layer."""

        def step(layer, x, rngs):
            return layer.fuse(x, query_mask, context, context_mask, direction, rngs)

        return self._run(step, queries, rngs)

    def unimodal(
        self,
        x: jax.Array,
        mask: jax.Array,
        *,
        rngs,
        all_layers: bool = False,
        visual: bool = False,
    ) -> jax.Array:
        """One modality's states [batch, len, hidden] after the bottom L-K layers (which carry no
        cross-attention): exactly what the two-stream mode computes there. K = L gives `x`.

        `all_layers`: through every layer's self-attention and FFN, cross-attention skipped: a
        BERT encoder's computation (`SemVLP.encode_text`). `visual`: the staged mode's visual
        sequence, through the `VisualStage` when the encoder has one."""

        def step(layer, x, rngs):
            return layer.single(x, mask, rngs)

        part = 'all' if all_layers else 'bottom'
        if visual and self.visual_stage is not None:
            part = 'visual'
        x, _ = self._run(step, x, rngs, part=part)
        return x

    def joint(self, text, text_mask, image, image_mask, *, rngs) -> EncoderOutput:
        """The staged mode's cross-modal stage: the top K layers run joint self-attention over the
        concatenated uni-modal outputs (cross-attention skipped). The layers' lists hold the K
        joint layers' outputs."""
        return self._single(text, text_mask, image, image_mask, rngs, part='top')

    def layer(self, index: int) -> EncoderLayer:
        """Layer `index` (bottom is 0) as a module of its own, in either layout (a scanned
        stack's slice is merged into a fresh module); for inspection, not for the forward pass."""
        if self.layers is not None:
            return self.layers[index]
        first = 0
        for size, stack in zip(self.stack_sizes, self.stacks):
            if index < first + size:
                graphdef, state = nnx.split(stack)
                return nnx.merge(graphdef, jax.tree.map(operator.itemgetter(index - first), state))
            first += size
        raise IndexError(f'layer {index} out of range for {first} layers')

    def _pieces(self, part: str) -> list:
        """What `part` of the encoder runs, bottom first: EncoderLayer modules (unrolled layout)
        or (size, stack) pairs (scanned). `all`, `bottom` (the L-K layers without
        cross-attention), `top` (the K layers above them), or `visual` (the `VisualStage`)."""
        bottom = self.num_unimodal_layers
        if part == 'visual':
            stage = self.visual_stage
            return list(stage.layers) if stage.layers is not None else [(stage.size, stage.stack)]
        if self.layers is not None:
            layers = list(self.layers)
            return {'all': layers, 'bottom': layers[:bottom], 'top': layers[bottom:]}[part]
        stacks = list(zip(self.stack_sizes, self.stacks))
        if part == 'all':
            return stacks
        # With L-K bottom layers the first stack holds them and the second the top K.
        if part == 'bottom':
            return stacks[:1] if bottom else []
        return stacks[-1:]

    def _run(self, step: Callable, carry: Any, rngs, *, part: str = 'all') -> tuple[Any, list[Any]]:
        """Runs `step(layer, carry, rngs) -> carry` through the layers of `part` (see `_pieces`),
        bottom first.

        Returns the final carry and the carry after each layer.
        """
        if self.remat != 'none':
            step = nnx.remat(step, policy=REMAT_POLICIES[self.remat])
        after = []
        for piece in self._pieces(part):
            if isinstance(piece, EncoderLayer):
                carry = step(piece, carry, rngs)
                after.append(carry)
                continue
            size, stack = piece

            @nnx.scan(in_axes=(0, nnx.Carry, 0), out_axes=(nnx.Carry, 0))
            def scan(layer, carry, rngs):
                carry = step(layer, carry, rngs)
                return carry, carry

            if rngs is not None:  # a different dropout stream for each layer of the stack
                scan = nnx.split_rngs(splits=size)(scan)
            carry, stacked = scan(stack, carry, rngs)
            after += [jax.tree.map(lambda x, i=i: x[i], stacked) for i in range(size)]
        return carry, after

    def _single(self, text, text_mask, image, image_mask, rngs, part='all') -> EncoderOutput:
        image_len = image.shape[1]
        mask = jnp.concatenate([image_mask, text_mask], axis=1)

        def step(layer, x, rngs):
            return layer.single(x, mask, rngs)

        x, after = self._run(step, jnp.concatenate([image, text], axis=1), rngs, part=part)
        return EncoderOutput(
            text=x[:, image_len:],
            image=x[:, :image_len],
            text_layers=[x[:, image_len:] for x in after],
            image_layers=[x[:, :image_len] for x in after],
        )

    def _two(self, text, text_mask, image, image_mask, rngs) -> EncoderOutput:
        def step(layer, carry, rngs):
            return layer.two(carry[0], text_mask, carry[1], image_mask, rngs)

        (text, image), after = self._run(step, (text, image), rngs)
        return EncoderOutput(
            text, image, [text for text, _ in after], [image for _, image in after]
        )


def stack_sizes(num_layers: int, num_cross_layers: int) -> tuple[int, ...]:
    """Layers in each scanned stack, bottom first: (L-K, K), or (K,) when every layer crosses."""
    return tuple(size for size in (num_layers - num_cross_layers, num_cross_layers) if size)


def _stacked(size: int, make_layer: Callable[[nnx.Rngs], EncoderLayer], rngs: nnx.Rngs):
    """`size` independently initialised layers as one module with a leading `layers` axis."""

    @nnx.split_rngs(splits=size)
    @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: 'layers'})
    def create(rngs):
        return make_layer(rngs)

    return create(rngs)


def stack_layers(encoder_params: dict, num_layers: int, num_cross_layers: int) -> dict:
    """Encoder parameters in the unrolled layout (`layers/<i>/...`) -> the scanned one.

    `encoder_params` is a nested dict of arrays; the result has `stacks/<j>/...` with each leaf of
    stack j the layers' leaves stacked on a new leading axis, and the staged mode's visual layers
    (`visual_stage/layers/<i>`, when present) as its one stack (`visual_stage/stack`).
    """
    layers = encoder_params['layers']
    stacks, first = {}, 0
    for j, size in enumerate(stack_sizes(num_layers, num_cross_layers)):
        stacks[j] = _stack_leaves([layers[i] for i in range(first, first + size)])
        first += size
    rest = {k: v for k, v in encoder_params.items() if k != 'layers'}
    if VISUAL_STAGE in rest:
        visual = rest[VISUAL_STAGE]['layers']
        rest[VISUAL_STAGE] = {'stack': _stack_leaves([visual[i] for i in sorted(visual)])}
    return {**rest, 'stacks': stacks}


def unstack_layers(encoder_params: dict) -> dict:
    """Encoder parameters in the scanned layout (`stacks/<j>/...`) -> the unrolled one: the
    inverse of `stack_layers`. The stacks' sizes are their leaves' leading axis."""
    layers = {}
    for j in sorted(encoder_params['stacks']):
        layers.update(_unstack_leaves(encoder_params['stacks'][j], first=len(layers)))
    rest = {k: v for k, v in encoder_params.items() if k != 'stacks'}
    if VISUAL_STAGE in rest:
        rest[VISUAL_STAGE] = {'layers': _unstack_leaves(rest[VISUAL_STAGE]['stack'], first=0)}
    return {**rest, 'layers': layers}


def _stack_leaves(layers: list) -> Any:
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *layers)


def _unstack_leaves(stack, first: int) -> dict:
    """A stack's layers as {first + i: layer i}."""
    size = jax.tree.leaves(stack)[0].shape[0]
    return {first + i: jax.tree.map(lambda leaf, i=i: leaf[i], stack) for i in range(size)}
