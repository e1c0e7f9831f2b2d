"""Checkpoints: save, resume and fine-tune loading over orbax's CheckpointManager.

A checkpoint is one step directory, WORKDIR/checkpoints/<step>/, holding three items:

  state/  the TrainState: step, params, optimizer state, RNG key data, skip counters
  data/   the train iterator's position (grain checkpointing; one file per process)
  meta/   JSON: per-leaf fingerprints of the state, the config, the start-of-run evaluation

The mode schedule is a pure function of the step, so the step is its position. Saves are
asynchronous: `save` returns once the arrays are copied off the devices and the files are written
in the background; orbax renames a step directory into place only when it is complete, so a kill
mid-save leaves no half checkpoint behind. A state with a NaN or inf is never written.

On restore the target carries the shardings of the current mesh, so a checkpoint written on one
mesh loads onto another. A latest checkpoint that cannot be read, or whose values do not match the
fingerprints written with it, is moved to WORKDIR/corrupt_checkpoints/ and the previous one is
used. A checkpoint of a different model (other shapes or parameters) is an error that lists the
differences. Loading a checkpoint's parameters into another model (fine-tuning) is in
`pretrained.py`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import pathlib
import shutil
import signal
from collections.abc import Mapping
from typing import Any

import grain
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from semvlp_jax.errors import ConfigError, is_disk_full
from semvlp_jax.train_step import TrainState
from semvlp_jax.workdir import STATE_ITEM, RunDir

STATE, DATA, META = STATE_ITEM, 'data', 'meta'

# Orbax writes an array held whole by several devices (a replicated parameter) in parallel, each
# replica a slice of it. A slice is an eager device op, compiled per shape, and for the small
# leaves of a state (biases, norms, tiny layers) the slicing costs more than the write it spreads:
# split an array only where each replica's part is at least this many bytes.
MIN_REPLICA_SLICE_BYTES = 256 * 1024


def _state_handler() -> ocp.PyTreeCheckpointHandler:
    registry = ocp.type_handlers.create_type_handler_registry(
        *[
            (ty, ocp.type_handlers.get_type_handler(ty))
            for ty in ocp.type_handlers.supported_types()
            if ty is not jax.Array
        ],
        (
            jax.Array,
            ocp.type_handlers.ArrayHandler(
                min_slice_bytes_for_replica_parallel=MIN_REPLICA_SLICE_BYTES
            ),
        ),
    )
    return ocp.PyTreeCheckpointHandler(type_handler_registry=registry)


class DiskFullError(OSError):
    """The disk of the checkpoint directory has no room for the next checkpoint."""

    def __str__(self) -> str:
        return self.strerror


def free_bytes(directory: str | os.PathLike) -> int | None:
    """Free bytes on the disk that holds `directory` (or its nearest existing parent); None on
    an object store (`gs://`), where there is no such limit to check."""
    path = os.fspath(directory)
    if '://' in path:
        return None
    path = pathlib.Path(path)
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def saved_bytes(tree) -> int:
    """The bytes of the arrays in `tree`: about what a checkpoint of it takes on disk (a typed
    PRNG key, whose dtype numpy cannot size, counts as nothing: it is a few bytes)."""
    total = 0
    for x in jax.tree.leaves(tree):
        if not jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            total += int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize
    return total


def bytes_on_disk(directory: os.PathLike) -> int:
    """The size of the files under a local `directory` (0 if it is not there)."""
    root = pathlib.Path(os.fspath(directory))
    return sum(f.stat().st_size for f in root.rglob('*') if f.is_file()) if root.is_dir() else 0


def megabytes(n: int | None) -> str:
    return 'unknown' if n is None else f'{n / 2**20:.1f} MiB'


class CheckpointMismatchError(ValueError):
    """The checkpoint holds a different model or optimizer than the one this run builds."""


class NoReadableCheckpointError(RuntimeError):
    """Checkpoints exist but none of them can be restored."""


def to_saved(state: TrainState) -> dict[str, Any]:
    """The TrainState as the dict that is written (the typed RNG key as its raw key data)."""
    return {**_fields(state), 'rng': jax.random.key_data(state.rng)}


def to_saved_abstract(abstract_state: TrainState) -> dict[str, Any]:
    """The abstract target of `to_saved`: ShapeDtypeStructs with the current shardings."""
    key_data = jax.eval_shape(jax.random.key_data, abstract_state.rng)
    rng = jax.ShapeDtypeStruct(key_data.shape, key_data.dtype, sharding=abstract_state.rng.sharding)
    return {**_fields(abstract_state), 'rng': rng}


def from_saved(saved: Mapping[str, Any]) -> TrainState:
    # The key comes from jax.random.key (the default PRNG implementation); another
    # implementation has other key-data shapes, which the compatibility check reports.
    return TrainState(**{**saved, 'rng': jax.random.wrap_key_data(saved['rng'])})


def _fields(state: TrainState) -> dict[str, Any]:
    return {field.name: getattr(state, field.name) for field in dataclasses.fields(state)}


@jax.jit
def fingerprint(tree) -> jax.Array:
    """[leaves, 2]: each leaf's sum and sum of absolute values, in float32.

    Written with a checkpoint and recomputed after restore: a damaged file that still decodes
    changes them. A non-finite entry means the state holds a NaN or inf.
    """
    leaves = [x.astype(jnp.float32) for x in jax.tree.leaves(tree)]
    return jnp.stack([jnp.stack([jnp.sum(x), jnp.sum(jnp.abs(x))]) for x in leaves])


def fingerprints_match(written, restored) -> bool:
    written, restored = np.asarray(written, np.float64), np.asarray(restored, np.float64)
    if written.shape != restored.shape:
        return False
    # Exact on the same mesh; another mesh may sum in another order, hence the tolerance.
    scale = np.maximum(written[:, 1], 1e-30)[:, None]
    return bool(np.all(np.abs(written - restored) <= 1e-5 * scale))


def flat_leaves(tree) -> dict[str, Any]:
    """{'params/encoder/layers/0/...': leaf}: each leaf under its path's `keystr`."""
    return {
        jax.tree_util.keystr(path, simple=True, separator='/'): leaf
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
    }


def flat_shapes(tree) -> dict[str, tuple[int, ...]]:
    return {key: tuple(leaf.shape) for key, leaf in flat_leaves(tree).items()}


def shape_differences(
    written: Mapping[str, tuple], expected: Mapping[str, tuple], limit: int = 20
) -> list[str]:
    """Human-readable lines: leaves only in the checkpoint, only in the model, or reshaped;
    parameters before optimizer state."""

    def ordered(keys):
        return sorted(keys, key=lambda k: (not k.startswith('params/'), k))

    lines = [
        f'  only in the checkpoint: {k} {written[k]}' for k in ordered(written.keys() - expected)
    ]
    lines += [
        f'  only in this model: {k} {expected[k]}' for k in ordered(expected.keys() - written)
    ]
    lines += [
        f'  shape differs: {k} checkpoint {written[k]} vs model {expected[k]}'
        for k in ordered(written.keys() & expected.keys())
        if written[k] != expected[k]
    ]
    if len(lines) > limit:
        lines = lines[:limit] + [f'  ... and {len(lines) - limit} more']
    return lines


class Checkpoints:
    """The checkpoints of one run directory."""

    def __init__(
        self,
        workdir: str | os.PathLike,
        *,
        keep: int,
        best_metric: str = '',
        best_metric_goal: str = 'max',
        async_save: bool = True,
    ):
        self.run_dir = RunDir(workdir)
        self.directory = self.run_dir.checkpoints
        self.best_metric = best_metric
        self._writing: tuple[int, int] | None = None  # (step, bytes) of the save in progress
        policies = [ocp.checkpoint_managers.LatestN(n=keep)]
        if best_metric:
            worst = -np.inf if best_metric_goal == 'max' else np.inf
            policies.append(
                ocp.checkpoint_managers.BestN(
                    get_metric_fn=lambda metrics: metrics.get(best_metric, worst),
                    reverse=best_metric_goal == 'min',  # BestN keeps the last n in sorted order
                    n=1,
                    keep_checkpoints_without_metrics=False,
                )
            )
        options = ocp.CheckpointManagerOptions(
            preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(policies),
            enable_async_checkpointing=async_save,
            cleanup_tmp_directories=True,  # what a kill mid-save left behind
        )
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=options,
            item_handlers={
                STATE: _state_handler(),
                DATA: grain.checkpoint.CheckpointHandler(),
                META: ocp.JsonCheckpointHandler(),
            },
        )

    def steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def save(
        self,
        state: TrainState,
        data_iterator,
        *,
        meta: Mapping[str, Any],
        metrics: Mapping[str, float] | None = None,
    ) -> bool:
        """Starts writing a checkpoint of `state` (at its step); False if it was not written.

        `metrics` (an evaluation at this step) rank it for `best_metric`.
        """
        step = int(state.step)
        if step in self._manager.all_steps():
            return False
        saved = to_saved(state)
        prints = np.asarray(jax.device_get(fingerprint(saved)))
        if not np.isfinite(prints).all():
            bad = [
                key for key, row in zip(flat_leaves(saved), prints) if not np.isfinite(row).all()
            ]
            logging.error(
                'not writing a checkpoint at step %d: non-finite values in %s', step, bad[:10]
            )
            return False
        meta = {**meta, 'step': step, 'fingerprint': prints.tolist()}
        if metrics is not None:
            metrics = {k: float(v) for k, v in metrics.items()}
        self.wait()  # the previous save's space is taken before this one's is counted
        size, free = self._checkpoint_bytes(saved), free_bytes(self.directory)
        if free is not None and free < size:
            raise self._disk_full(step, free, size)
        self._writing = (step, size)
        with self._disk_full_check():
            self._manager.save(
                step,
                args=ocp.args.Composite(
                    **{
                        STATE: ocp.args.PyTreeSave(saved),
                        DATA: grain.checkpoint.CheckpointSave(data_iterator),
                        META: ocp.args.JsonSave(meta),
                    }
                ),
                metrics=metrics,
                force=True,
            )
        return True

    def warn_if_short_of_space(self, abstract_state: TrainState, keep: int) -> None:
        """A warning at start when the disk has room for fewer than `keep` + 1 checkpoints (a
        save is written beside the ones kept before the oldest is deleted)."""
        size, free = self._checkpoint_bytes(abstract_state), free_bytes(self.directory)
        if free is not None and free < (keep + 1) * size:
            logging.warning(
                '%s free on the disk of %s, room for %d checkpoint(s) of about %s; the run keeps '
                '%d (config.keep_checkpoints) and writes one more before deleting the oldest',
                megabytes(free),
                self.directory,
                free // max(size, 1),
                megabytes(size),
                keep,
            )

    def _checkpoint_bytes(self, state) -> int:
        """What the next checkpoint of `state` takes: its arrays' bytes, or, when larger, what
        the latest checkpoint takes on disk (file-format overhead dominates for small models)."""
        steps = self._manager.all_steps()
        written = 0
        if steps and free_bytes(self.directory) is not None:
            written = bytes_on_disk(self.directory / str(max(steps)))
        return max(saved_bytes(state), written)

    @contextlib.contextmanager
    def _disk_full_check(self):
        """Turns a write that ran out of space into one DiskFullError, with the partial
        checkpoint removed (the previous checkpoints are untouched)."""
        try:
            yield
        except Exception as e:
            if not is_disk_full(e) or self._writing is None:
                raise
            step, size = self._writing
            self._writing = None
            self._remove_partial(step)
            raise self._disk_full(step, free_bytes(self.directory), size) from None

    def _disk_full(self, step: int, free: int | None, size: int) -> DiskFullError:
        previous = [s for s in self._manager.all_steps() if s != step]
        kept = f'the checkpoint at step {max(previous)} is intact' if previous else 'none is kept'
        return DiskFullError(
            errno.ENOSPC,
            f'no space for the checkpoint at step {step} in {self.directory}: '
            f'{megabytes(free)} free, the checkpoint takes about {megabytes(size)}; nothing of it '
            f'was kept and {kept}. Free some space (or lower config.keep_checkpoints) and rerun '
            'to resume',
        )

    def _remove_partial(self, step: int) -> None:
        """Whatever a failed save of `step` left in the checkpoint directory."""
        if jax.process_index() == 0 and self.directory.exists():
            for path in self.directory.iterdir():
                if path.name.split('.')[0] == str(step):
                    path.rmtree(missing_ok=True)
        self._manager.reload()

    def restore_latest(
        self, abstract_state: TrainState, data_iterator
    ) -> tuple[TrainState, dict[str, Any]] | None:
        """(state, meta) of the latest readable checkpoint, with `data_iterator` moved to its
        position; None if there is no checkpoint.

        `abstract_state` is a TrainState of ShapeDtypeStructs carrying the current shardings.
        Unreadable or damaged checkpoints are moved aside, newest first, until one restores.
        """
        abstract = to_saved_abstract(abstract_state)
        steps = self.steps()
        for step in reversed(steps):
            self._check_compatible(step, abstract)
            try:
                restored = self._manager.restore(
                    step,
                    args=ocp.args.Composite(
                        **{
                            STATE: ocp.args.PyTreeRestore(
                                abstract,
                                restore_args=ocp.checkpoint_utils.construct_restore_args(abstract),
                            ),
                            DATA: grain.checkpoint.CheckpointRestore(data_iterator),
                            META: ocp.args.JsonRestore(),
                        }
                    ),
                )
                meta = restored[META]
                if not fingerprints_match(meta['fingerprint'], fingerprint(restored[STATE])):
                    raise ValueError(
                        'restored values differ from the fingerprint written with them'
                    )
            except ConfigError:  # the run's config, not damage (another config.data.input_workers)
                raise
            except Exception as e:  # noqa: BLE001 - any failure to read means: try the previous one
                self._set_aside(step, e)
                continue
            if step != steps[-1]:
                logging.warning('resuming from step %d, the newest readable checkpoint', step)
            return from_saved(restored[STATE]), meta
        if steps:
            raise NoReadableCheckpointError(
                f'none of the checkpoints {steps} in {self.directory} could be restored (moved to '
                f'{self.run_dir.corrupt_checkpoints}); remove {self.directory} to start afresh'
            )
        return None

    def _check_compatible(self, step: int, abstract: Mapping[str, Any]) -> None:
        """Raises CheckpointMismatchError if this run cannot use the checkpoint even when intact.

        A mismatch is the run's config, not damage: the checkpoint stays where it is.
        """
        data_files = sorted(p.name for p in (self.directory / str(step) / DATA).glob('*.json'))
        mine = f'process_{jax.process_index()}-of-{jax.process_count()}.json'
        if data_files and mine not in data_files:
            raise CheckpointMismatchError(
                f'the checkpoint at {self.directory / str(step)} holds the input positions of '
                f'{data_files} but this is process {jax.process_index()} of '
                f'{jax.process_count()}; resume with the process count it was written with'
            )
        try:
            written = flat_shapes(self._manager.item_metadata(step)[STATE])
        except Exception:  # noqa: BLE001 - unreadable metadata: restore fails and falls back
            return
        differences = shape_differences(written, flat_shapes(abstract))
        if differences:
            raise CheckpointMismatchError(
                f'the checkpoint at {self.directory / str(step)} was written by a different model '
                'or optimizer config than this run builds:\n'
                + '\n'.join(differences)
                + '\nUse the config it was written with, or another --workdir.'
            )

    def _set_aside(self, step: int, error: Exception) -> None:
        source = self.directory / str(step)
        target = self.run_dir.corrupt_checkpoints / str(step)
        logging.warning(
            'checkpoint at step %d cannot be restored (%s: %s); moving it to %s and falling back '
            'to the previous one',
            step,
            type(error).__name__,
            str(error).splitlines()[0][:300] if str(error) else '',
            target,
        )
        if jax.process_index() == 0:
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.exists():
                target.rmtree()
            source.rename(target)
        ocp.multihost.sync_global_processes(f'set_aside_checkpoint_{step}')
        self._manager.reload()

    def reached_preemption(self, step: int) -> bool:
        """JAX's preemption notice (multi-host TPU); all processes agree on the step."""
        return self._manager.reached_preemption(step)

    def wait(self) -> None:
        with self._disk_full_check():
            self._manager.wait_until_finished()
        self._writing = None

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self._manager.close()

    def __enter__(self) -> Checkpoints:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class StopRequest:
    """SIGTERM (single process), or JAX's preemption notice (multi-host), seen at a step boundary.

    A local signal flag is used only in a single-process run: in a multi-host run every process
    must stop at the same step, which JAX's preemption sync point provides.
    """

    def __init__(self, checkpoints: Checkpoints):
        self._checkpoints = checkpoints
        self._signalled = False
        self._previous = None

    def __enter__(self) -> StopRequest:
        if jax.process_count() == 1:
            self._previous = signal.signal(signal.SIGTERM, self._on_signal)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)

    def _on_signal(self, signum, frame) -> None:
        logging.warning('SIGTERM: saving a checkpoint at the end of this step, then stopping')
        self._signalled = True

    def __call__(self, step: int) -> bool:
        if jax.process_count() == 1:
            return self._signalled
        return self._checkpoints.reached_preemption(step)
