"""Fine-tuning from a checkpoint: load the parameters that fit, initialise the rest, report.

A downstream model shares the pre-trained encoder but has heads of its own (another answer set,
a new task), and may drop pre-training heads or blocks; so parameters are matched by path and
shape, not by config. The encoder may be stored in either layout (`config.model.scan_layers`):
unrolled, `encoder/layers/<i>/...`, or scanned, `encoder/stacks/<j>/...` with a leading layers
axis (and a staged model's visual stage `encoder/visual_stage/layers/<i>/...` or one
`encoder/visual_stage/stack/...`); a checkpoint in the other layout than the model's is
converted before matching.
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Mapping
from typing import Any

import jax
import orbax.checkpoint as ocp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from semvlp_jax.checkpoint import STATE, flat_leaves, flat_shapes
from semvlp_jax.models.encoder import VISUAL_STAGE, stack_layers, unstack_layers
from semvlp_jax.workdir import step_directory

UNROLLED, SCANNED = 'layers', 'stacks'  # the encoder's key for its layers in each layout


@dataclasses.dataclass
class LoadReport:
    """What `load_pretrained` did, leaf paths under params (in the model's encoder layout)."""

    loaded: list[str]
    new: list[str]  # in the model, absent from (or reshaped in) the checkpoint: freshly initialised
    dropped: list[str]  # in the checkpoint, not in the model

    def summary(self) -> str:
        def sample(names):
            return ', '.join(names[:6]) + (', ...' if len(names) > 6 else '')

        return (
            f'loaded {len(self.loaded)} parameter arrays; new (initialised) {len(self.new)}: '
            f'[{sample(self.new)}]; dropped {len(self.dropped)}: [{sample(self.dropped)}]'
        )


def load_pretrained(
    path: str | pathlib.Path, params, skip: tuple[str, ...] = ()
) -> tuple[Any, LoadReport]:
    """`params` (a pure tree of arrays, e.g. freshly initialised) with every leaf that the
    checkpoint holds at the same path and shape replaced by the checkpoint's value.

    `path` is a run directory (its latest checkpoint is used), its `checkpoints/` directory, or
    one step directory. Leaves under a path prefix in `skip` (e.g. 'answer_head': a new answer
    set of the same size would otherwise inherit rows meant for other answers) keep their
    initial values. An encoder written in the other layout (unrolled or scanned) is converted
    to the model's first. Loaded leaves take the sharding of the leaf they replace.
    """
    step_dir = step_directory(path)
    metadata = ocp.PyTreeCheckpointHandler().metadata(step_dir / STATE)['params']
    written, expected = flat_shapes(metadata), flat_shapes(params)
    conversion = _Conversion.between(metadata, written, expected)
    if conversion is not None:
        written = conversion.written_as_model(written)

    def wanted(key: str) -> bool:
        return written.get(key) == expected[key] and not any(
            key == prefix or key.startswith(prefix + '/') for prefix in skip
        )

    loaded = sorted(k for k in expected if wanted(k))
    report = LoadReport(
        loaded=loaded,
        new=sorted(expected.keys() - set(loaded)),
        dropped=sorted(written.keys() - expected.keys()),
    )
    converted = {k for k in loaded if conversion is not None and conversion.converts(k)}
    direct = set(loaded) - converted
    target = jax.tree_util.tree_map_with_path(
        lambda p, x: (
            jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
            if jax.tree_util.keystr(p, simple=True, separator='/') in direct
            else None
        ),
        params,
    )
    target = _prune_none(target)
    if converted:
        target.setdefault('encoder', {}).update(conversion.restore_target(params))
    restored = ocp.PyTreeCheckpointer().restore(
        step_dir / STATE,
        args=ocp.args.PyTreeRestore(
            {'params': target},
            restore_args=ocp.checkpoint_utils.construct_restore_args({'params': target}),
            partial_restore=True,
        ),
    )['params']
    values = {k: v for k, v in flat_leaves(restored).items() if k in direct}
    if converted:
        encoder = conversion.convert(restored['encoder'])
        values.update(
            (k, v) for k, v in flat_leaves({'encoder': encoder}).items() if k in converted
        )
    merged = jax.tree_util.tree_map_with_path(
        lambda p, x: _like(values.get(jax.tree_util.keystr(p, simple=True, separator='/')), x),
        params,
    )
    return merged, report


def _like(value, leaf):
    """`value` in `leaf`'s sharding (a converted leaf was stacked or sliced); `leaf` if None."""
    if value is None:
        return leaf
    return value if value.sharding == leaf.sharding else jax.device_put(value, leaf.sharding)


@dataclasses.dataclass(frozen=True)
class _Conversion:
    """The checkpoint's encoder layers in layout `source`, the model's in the other one: the
    encoder's own layers and, in a staged (MVPTR) model, its visual stage's."""

    source: str  # UNROLLED or SCANNED
    # The checkpoint's layer subtrees of the encoder (array metadata): `<source>` and, when it
    # has one, `visual_stage` (`layers/<i>` or `stack`).
    metadata: Mapping[str, Any]
    num_layers: int
    num_cross_layers: int

    @classmethod
    def between(cls, metadata, written, expected) -> _Conversion | None:
        """The conversion of the checkpoint's layout into the model's; None if they agree,
        either has no encoder layers, or the checkpoint's layers do not form a stack plan."""
        source, model = _layout(written), _layout(expected)
        if source is None or model is None or source == model:
            return None
        layers, crossed = set(), set()
        for key in written:
            parts = key.split('/')
            if parts[:2] == ['encoder', source]:
                layers.add(int(parts[2]))
                if parts[3] == 'cross_attention':
                    crossed.add(int(parts[2]))
        num_layers, num_cross_layers = len(layers), len(crossed)
        if source == UNROLLED and (
            layers != set(range(num_layers))
            or crossed != set(range(num_layers - num_cross_layers, num_layers))
        ):
            return None  # not the bottom L-K plain and top K crossing layers that stacks hold
        encoder = metadata['encoder']
        subtrees = {k: encoder[k] for k in (source, VISUAL_STAGE) if k in encoder}
        return cls(source, subtrees, num_layers, num_cross_layers)

    def converts(self, key: str) -> bool:
        """Whether model leaf `key` comes out of the conversion."""
        return _within_layer(key, _other(self.source)) is not None

    def convert(self, encoder: Mapping[str, Any]) -> dict:
        """The checkpoint's encoder layers (read from its `encoder` subtree) in the model's
        layout: {model layout: subtree} and, with a visual stage, {'visual_stage': subtree}."""
        layers = self._indexed(encoder)
        if self.source == UNROLLED:
            return stack_layers(layers, self.num_layers, self.num_cross_layers)
        return unstack_layers(layers)

    def written_as_model(self, written: Mapping[str, tuple]) -> dict[str, tuple]:
        """The checkpoint's leaf shapes with its encoder layers in the model's layout."""
        abstract = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype), self.metadata)
        converted = flat_shapes({'encoder': jax.eval_shape(self.convert, abstract)})
        kept = {k: v for k, v in written.items() if _within_layer(k, self.source) is None}
        return {**kept, **converted}

    def restore_target(self, params) -> dict:
        """ShapeDtypeStructs for the checkpoint's layer subtrees of the encoder.

        A leaf takes the sharding and dtype of its model counterpart (the same leaf of a model
        layer of the same group) with the layers axis dropped or added; a leaf without a
        counterpart of its shape (it will not load) is restored replicated.
        """
        model = _other(self.source)
        counterparts = {}  # (group, path within a layer) -> (layer shape, dtype, source sharding)
        for key, leaf in flat_leaves(params).items():
            where = _within_layer(key, model)
            if where is None:
                continue
            layer_shape = leaf.shape[1:] if model == SCANNED else leaf.shape
            sharding = leaf.sharding
            if isinstance(sharding, NamedSharding):
                spec = tuple(sharding.spec) + (None,) * (leaf.ndim - len(sharding.spec))
                spec = spec[1:] if model == SCANNED else (None, *spec)
                sharding = NamedSharding(sharding.mesh, P(*spec))
            counterparts.setdefault(where, (tuple(layer_shape), leaf.dtype, sharding))
        replicated = _replicated(jax.tree.leaves(params)[0].sharding)

        def target(path, meta):
            key = jax.tree_util.keystr(path, simple=True, separator='/')
            layer_shape = tuple(meta.shape[1:] if self.source == SCANNED else meta.shape)
            shape, dtype, sharding = counterparts.get(
                _within_layer(key, self.source), (None, None, None)
            )
            if shape != layer_shape:
                dtype, sharding = meta.dtype, replicated
            return jax.ShapeDtypeStruct(tuple(meta.shape), dtype, sharding=sharding)

        encoder = {'encoder': self._indexed(self.metadata)}
        return jax.tree_util.tree_map_with_path(target, encoder)['encoder']

    def _indexed(self, encoder: Mapping[str, Any]) -> dict:
        """The layer subtrees of `encoder` in the source layout, layer and stack indices as ints
        (the model's keys; the checkpoint's metadata has strings)."""
        indexed = lambda tree: {int(k): v for k, v in tree.items()}  # noqa: E731
        layers = {self.source: indexed(encoder[self.source])}
        if VISUAL_STAGE in self.metadata:
            visual = encoder[VISUAL_STAGE]
            layers[VISUAL_STAGE] = (
                {'layers': indexed(visual['layers'])}
                if self.source == UNROLLED
                else {'stack': visual['stack']}
            )
        return layers


# Each layout's layer containers, under which a leaf's path is `<i>/<within a layer>` (a layer
# or stack index first) or, for the visual stage's one stack, `<within a layer>`.
_CONTAINERS = {
    UNROLLED: (('encoder', 'encoder/layers/'), (VISUAL_STAGE, f'encoder/{VISUAL_STAGE}/layers/')),
    SCANNED: (('encoder', 'encoder/stacks/'), (VISUAL_STAGE, f'encoder/{VISUAL_STAGE}/stack/')),
}


def _within_layer(key: str, layout: str) -> tuple[str, str] | None:
    """(layer group, path within a layer) of a layer leaf in `layout`, e.g.
    'encoder/stacks/1/feed_forward/expand/kernel' -> ('encoder', 'feed_forward/expand/kernel');
    None for a leaf outside the layers."""
    for group, container in _CONTAINERS[layout]:
        if key.startswith(container):
            rest = key[len(container) :]
            indexed = not (group == VISUAL_STAGE and layout == SCANNED)
            return group, rest.split('/', 1)[1] if indexed else rest
    return None


def _layout(keys) -> str | None:
    for layout in (UNROLLED, SCANNED):
        if any(k.startswith(f'encoder/{layout}/') for k in keys):
            return layout
    return None


def _other(layout: str) -> str:
    return SCANNED if layout == UNROLLED else UNROLLED


def _replicated(sharding):
    if isinstance(sharding, NamedSharding):
        return NamedSharding(sharding.mesh, P())
    return sharding


def _prune_none(tree):
    """Drops None leaves and the dicts they leave empty."""
    if isinstance(tree, Mapping):
        pruned = {k: _prune_none(v) for k, v in tree.items()}
        return {k: v for k, v in pruned.items() if v is not None and v != {}}
    return tree
