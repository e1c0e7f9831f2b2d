"""The SemVLP pre-training loop, top to bottom.

Stages: config check -> devices -> input -> model and optimizer -> compiled steps -> evaluation ->
loop -> final report. The mode schedule picks `single`, `two` (or `both`) for each step; each mode
is one compiled program.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from flax import nnx

from semvlp_jax import config_checks
from semvlp_jax.data import pipeline
from semvlp_jax.models.semvlp import DataDims, SemVLP
from semvlp_jax.optimizer import ModeAwareOptimizer
from semvlp_jax.parallel import mesh as mesh_lib
from semvlp_jax.parallel import sharding
from semvlp_jax.progress import MetricAverager, Progress, RunLog
from semvlp_jax.train_step import TrainState, eval_step, train_step

# Metrics shown in the start/end table (all metrics go to TensorBoard and metrics.json).
TABLE_METRICS = ('mlm_accuracy', 'itm_accuracy', 'qa_accuracy', 'mop_object_accuracy', 'loss')


@dataclasses.dataclass(frozen=True)
class Model:
    """What the steps need besides the state: the NNX graph, the optimizer, the state layout."""

    graphdef: nnx.GraphDef
    optimizer: ModeAwareOptimizer
    state_shardings: TrainState  # a TrainState of NamedShardings


def create_model_and_state(
    config: ml_collections.ConfigDict, dims: DataDims, mesh: jax.sharding.Mesh
) -> tuple[Model, TrainState]:
    """Creates the train state directly in its sharded layout on `mesh`.

    The model is first built abstractly (shapes and logical axis names only); the rules table
    turns the names into shardings, and one jitted init writes every shard where it lives, so
    the full state never sits on one device.
    """
    root = jax.random.key(config.seed)

    def build_model() -> SemVLP:
        return SemVLP(config.model, dims, rngs=nnx.Rngs(params=jax.random.fold_in(root, 0)))

    graphdef, abstract_params = nnx.split(nnx.eval_shape(build_model), nnx.Param)
    logical_specs = nnx.to_pure_dict(nnx.get_partition_spec(abstract_params))
    abstract_params = nnx.to_pure_dict(abstract_params)
    optimizer = ModeAwareOptimizer.create(config, abstract_params)

    def init_state() -> TrainState:
        params = nnx.to_pure_dict(nnx.state(build_model(), nnx.Param))
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            opt_state=optimizer.init(params),
            rng=jax.random.fold_in(root, 1),
        )

    rules = sharding.rules_from_config(config.parallel)
    specs = sharding.param_specs(logical_specs, abstract_params, mesh, rules)
    shardings = sharding.state_shardings(mesh, jax.eval_shape(init_state), specs)
    state = jax.jit(init_state, out_shardings=shardings)()
    return Model(graphdef, optimizer, shardings), state


def jit_steps(config: ml_collections.ConfigDict, model: Model, mesh: jax.sharding.Mesh):
    """The train step, compiled once per mode (static), state donated and kept in its layout;
    and an eval step per mode that has objectives."""
    bound = dict(
        graphdef=model.graphdef,
        objectives=config.objectives.to_dict(),
        itm_negative_prob=config.itm_negative_prob,
    )
    replicated = jax.NamedSharding(mesh, jax.P())
    train_fn = jax.jit(
        functools.partial(
            train_step,
            optimizer=model.optimizer,
            microbatches=config.microbatches,
            **bound,
        ),
        static_argnames='mode',
        donate_argnums=0,
        out_shardings=(model.state_shardings, replicated),
    )
    eval_fns = {
        mode: jax.jit(functools.partial(eval_step, mode=mode, **bound), out_shardings=replicated)
        for mode, objectives in bound['objectives'].items()
        if objectives
    }
    return train_fn, eval_fns


def evaluate(
    eval_fns: dict[str, Callable], params, batches: list, rng: jax.Array
) -> dict[str, float]:
    """Mean of each metric over the fixed validation batches, keyed `val/<mode>/<metric>`."""
    results = {}
    for mode, fn in eval_fns.items():
        averager = MetricAverager()
        for i, batch in enumerate(batches):
            averager.add(jax.device_get(fn(params, batch, jax.random.fold_in(rng, i))))
        results.update({f'val/{mode}/{k}': v for k, v in averager.pop().items()})
    return results


def format_table(start: dict[str, float], end: dict[str, float]) -> str:
    rows = [f'{"mode":<8}{"metric":<24}{"start":>10}{"end":>10}']
    for key in sorted(end):
        _, mode, metric = key.split('/')
        if metric in TABLE_METRICS:
            rows.append(
                f'{mode:<8}{metric:<24}{start.get(key, float("nan")):>10.4f}{end[key]:>10.4f}'
            )
    return '\n'.join(rows)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
    # ---------------------------------------------------------------- config and devices
    schedule = config_checks.validate(
        config, num_devices=jax.device_count(), num_processes=jax.process_count()
    )
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    mesh = mesh_lib.make_mesh(config.mesh)
    batch_sharding = sharding.batch_sharding(mesh)
    logging.info(
        '%d devices (%s), mesh %s, %s parameters; schedule %s',
        jax.device_count(),
        jax.default_backend(),
        dict(mesh.shape),
        config.parallel.preset,
        config.schedule,
    )

    # ---------------------------------------------------------------- input
    data = pipeline.synthetic_pretraining(
        config.data,
        workdir,
        batch_size=config.batch_size,
        seed=config.seed,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )

    def global_batch(local_batch):
        """One global jax.Array per field from this process's rows."""
        return jax.tree.map(
            lambda x: jax.make_array_from_process_local_data(batch_sharding, x), local_batch
        )

    val_batches = [global_batch(b) for b in data.val[: config.eval_batches]]

    # ---------------------------------------------------------------- model and optimizer
    model, state = create_model_and_state(config, data.dims, mesh)
    num_params = sum(x.size for x in jax.tree.leaves(state.params))
    logging.info('model: %.2fM parameters', num_params / 1e6)

    # ---------------------------------------------------------------- compiled steps
    step_fn, eval_fns = jit_steps(config, model, mesh)
    eval_rng = jax.random.fold_in(jax.random.key(config.seed), 2)

    # ---------------------------------------------------------------- evaluation at start
    log = RunLog(workdir, enabled=jax.process_index() == 0)

    def run_eval(step: int, params) -> dict[str, float]:
        results = evaluate(eval_fns, params, val_batches, eval_rng)
        log.evaluation(step, results)
        logging.info('eval at step %d: %s', step, _short(results))
        return results

    start_metrics = run_eval(0, state.params)

    # ---------------------------------------------------------------- training loop
    progress, averager, pending = Progress(config.total_steps), MetricAverager(), []
    for step in range(config.total_steps):
        mode = schedule.mode(step)
        batch = global_batch(next(data.train))
        state, metrics = step_fn(state, batch, mode=mode)
        pending.append(metrics)
        done = step + 1
        if done % config.log_every == 0 or done == config.total_steps:
            for m in jax.device_get(pending):
                averager.add(m)
            pending.clear()
            means = averager.pop()
            _check_finite(means, done)
            log.scalars(done, {f'train/{k}': v for k, v in means.items()})
            logging.info(
                'step %d/%d | %s | %s',
                done,
                config.total_steps,
                _short(means),
                progress.report(done),
            )
        if done % config.eval_every == 0 and done != config.total_steps:
            run_eval(done, state.params)

    # ---------------------------------------------------------------- final report
    final_metrics = run_eval(config.total_steps, state.params)
    log.final(final_metrics)
    log.close()
    print(format_table(start_metrics, final_metrics), flush=True)
    return final_metrics


def _check_finite(metrics: dict[str, float], step: int) -> None:
    bad = sorted(k for k, v in metrics.items() if not np.isfinite(v))
    if bad:
        raise FloatingPointError(f'non-finite training metrics at step {step}: {bad}')


def _short(metrics: dict[str, float]) -> str:
    keys = [k for k in sorted(metrics) if k.rsplit('/', 1)[-1] in TABLE_METRICS]
    return ', '.join(f'{k} {metrics[k]:.3f}' for k in keys)
