"""What the recipe benchmarks (simla_demo.py, mvptr_demo.py) share: a run trained once in its
workdir (read back when it finished), and an evaluation context over this machine's devices."""

from __future__ import annotations

import json
import pathlib
import time

import jax
import ml_collections

from semvlp_jax import tasks, train
from semvlp_jax.inference import TrainedRun
from semvlp_jax.parallel import mesh as mesh_lib
from semvlp_jax.parallel import sharding


def trained(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> tuple[dict, float | None]:
    """(final metrics, wall seconds) of the run in `workdir`, trained here unless it finished."""
    final = workdir / 'metrics.json'
    wall_file = workdir / 'wall_seconds.txt'
    if not final.exists():
        start = time.perf_counter()
        train.train_and_evaluate(config, str(workdir))
        wall_file.write_text(f'{time.perf_counter() - start:.1f}\n')
    wall = float(wall_file.read_text()) if wall_file.exists() else None
    return json.loads(final.read_text()), wall


def eval_context(run: TrainedRun) -> tuple[tasks.EvalContext, dict]:
    """A context over this machine's devices and the run's parameters, replicated on them."""
    mesh = mesh_lib.make_mesh(run.config.mesh)
    batch_sharding = sharding.batch_sharding(mesh)

    def to_global(rows):
        return jax.tree.map(
            lambda x: jax.make_array_from_process_local_data(batch_sharding, x), rows
        )

    context = tasks.EvalContext(run.config, run.graphdef, mesh, to_global, True)
    params = jax.device_put(run.params, jax.NamedSharding(mesh, jax.P()))
    return context, params
