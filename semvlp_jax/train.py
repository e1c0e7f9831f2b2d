"""The SemVLP pre-training loop, top to bottom.

Stages: config check -> devices -> input -> model and optimizer -> compiled steps -> evaluation ->
loop -> final report. The mode schedule picks `single`, `two` (or `both`) for each step; each mode
is one compiled program.
"""

from __future__ import annotations

import functools
import json
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
from semvlp_jax.progress import MetricAverager, Progress, SummaryWriter
from semvlp_jax.train_step import TrainState, eval_step, train_step

# Metrics shown in the start/end table (all metrics go to TensorBoard and metrics.json).
TABLE_METRICS = ('mlm_accuracy', 'itm_accuracy', 'qa_accuracy', 'mop_object_accuracy', 'loss')


def create_model_and_state(config: ml_collections.ConfigDict, dims: DataDims):
    """Builds the model, splits it into (graphdef, params) and initialises the optimizer."""
    root = jax.random.key(config.seed)
    model = SemVLP(config.model, dims, rngs=nnx.Rngs(params=jax.random.fold_in(root, 0)))
    graphdef, params = nnx.split(model, nnx.Param)
    params = nnx.to_pure_dict(params)
    optimizer = ModeAwareOptimizer.create(config, params)
    state = TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=optimizer.init(params),
        rng=jax.random.fold_in(root, 1),
    )
    return graphdef, optimizer, state


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
    schedule = config_checks.validate(config, num_devices=jax.device_count())
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    mesh = jax.make_mesh((jax.device_count(),), ('data',), axis_types=(jax.sharding.AxisType.Auto,))
    batch_sharding = jax.NamedSharding(mesh, jax.P('data'))
    replicated = jax.NamedSharding(mesh, jax.P())
    logging.info(
        '%d devices (%s); schedule %s', jax.device_count(), jax.default_backend(), config.schedule
    )

    # ---------------------------------------------------------------- input
    data = pipeline.synthetic_pretraining(
        config.data, workdir, batch_size=config.batch_size, seed=config.seed
    )
    val_batches = [jax.device_put(b, batch_sharding) for b in data.val[: config.eval_batches]]

    # ---------------------------------------------------------------- model and optimizer
    graphdef, optimizer, state = create_model_and_state(config, data.dims)
    state = jax.device_put(state, replicated)
    num_params = sum(x.size for x in jax.tree.leaves(state.params))
    logging.info('model: %.2fM parameters', num_params / 1e6)

    # ---------------------------------------------------------------- compiled steps
    objectives = config.objectives.to_dict()
    step_fn = jax.jit(
        functools.partial(
            train_step,
            graphdef=graphdef,
            optimizer=optimizer,
            objectives=objectives,
            itm_negative_prob=config.itm_negative_prob,
        ),
        static_argnames='mode',
        donate_argnums=0,
    )
    eval_fns = {
        mode: jax.jit(
            functools.partial(
                eval_step,
                mode=mode,
                graphdef=graphdef,
                objectives=objectives,
                itm_negative_prob=config.itm_negative_prob,
            )
        )
        for mode in objectives
        if objectives[mode]
    }
    eval_rng = jax.random.fold_in(jax.random.key(config.seed), 2)

    # ---------------------------------------------------------------- evaluation at start
    writer = SummaryWriter(workdir)
    history = open(workdir / 'eval_history.jsonl', 'a')

    def run_eval(step: int, params) -> dict[str, float]:
        results = evaluate(eval_fns, params, val_batches, eval_rng)
        writer.scalars(step, results)
        history.write(json.dumps({'step': step, **results}) + '\n')
        history.flush()
        logging.info('eval at step %d: %s', step, _short(results))
        return results

    start_metrics = run_eval(0, state.params)

    # ---------------------------------------------------------------- training loop
    progress, averager, pending = Progress(config.total_steps), MetricAverager(), []
    for step in range(config.total_steps):
        mode = schedule.mode(step)
        batch = jax.device_put(next(data.train), batch_sharding)
        state, metrics = step_fn(state, batch, mode=mode)
        pending.append(metrics)
        done = step + 1
        if done % config.log_every == 0 or done == config.total_steps:
            for m in jax.device_get(pending):
                averager.add(m)
            pending.clear()
            means = averager.pop()
            _check_finite(means, done)
            writer.scalars(done, {f'train/{k}': v for k, v in means.items()})
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
    history.close()
    writer.close()
    (workdir / 'metrics.json').write_text(json.dumps(final_metrics, indent=2, sort_keys=True))
    print(format_table(start_metrics, final_metrics), flush=True)
    return final_metrics


def _check_finite(metrics: dict[str, float], step: int) -> None:
    bad = sorted(k for k, v in metrics.items() if not np.isfinite(v))
    if bad:
        raise FloatingPointError(f'non-finite training metrics at step {step}: {bad}')


def _short(metrics: dict[str, float]) -> str:
    keys = [k for k in sorted(metrics) if k.rsplit('/', 1)[-1] in TABLE_METRICS]
    return ', '.join(f'{k} {metrics[k]:.3f}' for k in keys)
