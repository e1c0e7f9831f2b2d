"""What the recipe benchmarks (simla_demo.py, mvptr_demo.py) share: their command line, a run
trained once in its workdir (read back when it finished), and an evaluation context over this
machine's devices."""

from __future__ import annotations

import argparse
import json
import pathlib
import time
from collections.abc import Sequence

import jax
import ml_collections
from absl import logging

from semvlp_jax import tasks, train
from semvlp_jax.inference import TrainedRun
from semvlp_jax.parallel import mesh as mesh_lib
from semvlp_jax.parallel import sharding
from semvlp_jax.progress import show_progress


def arguments(description: str, workdir: str, runs: Sequence[str]) -> argparse.ArgumentParser:
    """The options every recipe benchmark takes; a benchmark adds its own, then calls
    `selected_runs`."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument('--workdir', default=workdir, help='root of the run workdirs')
    parser.add_argument('--only', default=','.join(runs), help=f'runs, of {",".join(runs)}')
    parser.add_argument('--steps', type=int, default=0, help="0: the demo's total_steps")
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--eval_batches', type=int, default=0, help="0: the demo's")
    parser.add_argument('--output', default='', help='a JSON file for the results')
    parser.add_argument('--verbose', action='store_true', help="the trainer's progress lines")
    return parser


def selected_runs(parser: argparse.ArgumentParser, runs: Sequence[str]):
    """(parsed arguments, the runs `--only` names), refusing unknown ones; the trainer's
    progress lines only with `--verbose`."""
    args = parser.parse_args()
    names = args.only.split(',')
    unknown = sorted(set(names) - set(runs))
    if unknown:
        parser.error(f'unknown runs {unknown}; known: {list(runs)}')
    if args.verbose:
        show_progress()
    else:
        logging.set_verbosity(logging.WARNING)
    return args, names


def run_workdir(args, name: str, config: ml_collections.ConfigDict) -> pathlib.Path:
    """Where run `name` trains: one directory per run, budget, seed and evaluation size."""
    tag = f'{name}_steps{config.total_steps}_seed{args.seed}_eval{config.eval_batches}'
    return pathlib.Path(args.workdir) / tag


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
