"""Fine-tuning from a checkpoint: load the parameters that fit, initialise the rest, report.

A downstream model shares the pre-trained encoder but has heads of its own (another answer set,
a new task), and may drop pre-training heads or blocks; so parameters are matched by path and
shape, not by config.
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Mapping
from typing import Any

import jax
import orbax.checkpoint as ocp

from semvlp_jax.checkpoint import STATE, flat_shapes, path_str


@dataclasses.dataclass
class LoadReport:
    """What `load_pretrained` did, leaf paths under params."""

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
    initial values. Loaded leaves take the sharding of the leaf they replace.
    """
    step_dir = _step_directory(pathlib.Path(path))
    handler = ocp.PyTreeCheckpointHandler()
    written = flat_shapes(handler.metadata(step_dir / STATE)['params'])
    expected = flat_shapes(params)

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
    wanted = set(loaded)
    target = jax.tree_util.tree_map_with_path(
        lambda p, x: (
            jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
            if path_str(p) in wanted
            else None
        ),
        params,
    )
    target = _prune_none(target)
    restored = ocp.PyTreeCheckpointer().restore(
        step_dir / STATE,
        args=ocp.args.PyTreeRestore(
            {'params': target},
            restore_args=ocp.checkpoint_utils.construct_restore_args({'params': target}),
            partial_restore=True,
        ),
    )['params']
    values = {path_str(p): x for p, x in jax.tree_util.tree_flatten_with_path(restored)[0]}
    merged = jax.tree_util.tree_map_with_path(lambda p, x: values.get(path_str(p), x), params)
    return merged, report


def _step_directory(path: pathlib.Path) -> pathlib.Path:
    if (path / STATE).is_dir():
        return path
    root = path / 'checkpoints' if (path / 'checkpoints').is_dir() else path
    steps = sorted(int(p.name) for p in root.iterdir() if p.name.isdigit()) if root.is_dir() else []
    if not steps:
        raise FileNotFoundError(f'config.init_from={str(path)!r}: no checkpoint found there')
    return root / str(steps[-1])


def _prune_none(tree):
    """Drops None leaves and the dicts they leave empty."""
    if isinstance(tree, Mapping):
        pruned = {k: _prune_none(v) for k, v in tree.items()}
        return {k: v for k, v in pruned.items() if v is not None and v != {}}
    return tree
