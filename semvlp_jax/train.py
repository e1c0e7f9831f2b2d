"""The SemVLP training loop (pre-training and fine-tuning), top to bottom.

Stages: config check -> devices -> task input -> model and optimizer -> compiled steps ->
evaluation -> loop -> final report. The mode schedule picks `single`, `two` (or `both`) for each
step; each mode is one compiled program. The task (`config.task.name`) supplies the batches and
the evaluation; the loop is the same for all of them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Callable

import jax
import ml_collections
from absl import logging
from etils import epath
from flax import nnx

from semvlp_jax import checkpoint, config_checks, pretrained, tasks
from semvlp_jax.data.dims import DataDims
from semvlp_jax.models.semvlp import SemVLP
from semvlp_jax.optimizer import ModeAwareOptimizer
from semvlp_jax.parallel import mesh as mesh_lib
from semvlp_jax.parallel import sharding
from semvlp_jax.progress import MetricAverager, Progress, RunLog, headline
from semvlp_jax.simla.queues import FeatureQueues
from semvlp_jax.train_step import MomentumSettings, TrainState, train_step
from semvlp_jax.weights import hf_bert, vit
from semvlp_jax.workdir_lock import WorkdirLock


@dataclasses.dataclass(frozen=True)
class TrainSetup:
    """What the steps need besides the state: the NNX graph, the optimizer, the state layout;
    and how to make a fresh state."""

    graphdef: nnx.GraphDef
    optimizer: ModeAwareOptimizer
    state_shardings: TrainState  # a TrainState of NamedShardings
    abstract_state: TrainState  # a TrainState of ShapeDtypeStructs carrying those shardings
    init: Callable[[], TrainState]  # a freshly initialised state, created in its sharded layout


def create_model(
    config: ml_collections.ConfigDict, dims: DataDims, mesh: jax.sharding.Mesh
) -> TrainSetup:
    """The model, its optimizer and the state layout on `mesh`, without allocating the state.

    The model is built abstractly (shapes and logical axis names only); the rules table turns the
    names into shardings. `TrainSetup.init` is one jitted init that writes every shard where it lives,
    so the full state never sits on one device; a resumed run restores into `abstract_state`
    instead and never initialises.
    """
    root = jax.random.key(config.seed)

    def build_model() -> SemVLP:
        return SemVLP(config.model, dims, rngs=nnx.Rngs(params=jax.random.fold_in(root, 0)))

    abstract_model = nnx.eval_shape(build_model)
    graphdef, abstract_params = nnx.split(abstract_model, nnx.Param)
    logical_specs = nnx.to_pure_dict(nnx.get_partition_spec(abstract_params))
    abstract_params = nnx.to_pure_dict(abstract_params)
    optimizer = ModeAwareOptimizer.create(config, abstract_model)

    momentum = MomentumSettings.from_config(config)
    queues = None
    if momentum is not None and momentum.queue_size:
        queues = FeatureQueues.empty(momentum.queue_size, config.model.contrastive_dim)

    def init_state() -> TrainState:
        params = nnx.to_pure_dict(nnx.state(build_model(), nnx.Param))
        return TrainState.create(
            params,
            optimizer.init(params),
            jax.random.fold_in(root, 1),
            teacher=momentum is not None,
            queues=queues,
        )

    rules = sharding.rules_from_config(config.parallel)
    specs = sharding.param_specs(logical_specs, abstract_params, mesh, rules)
    shapes = jax.eval_shape(init_state)
    shardings = sharding.state_shardings(mesh, shapes, specs, tx=optimizer.tx)
    abstract_state = jax.tree.map(
        lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, shardings
    )
    init = jax.jit(init_state, out_shardings=shardings)
    return TrainSetup(graphdef, optimizer, shardings, abstract_state, init)


def create_model_and_state(
    config: ml_collections.ConfigDict, dims: DataDims, mesh: jax.sharding.Mesh
) -> tuple[TrainSetup, TrainState]:
    """The model and a freshly initialised, sharded train state."""
    model = create_model(config, dims, mesh)
    return model, model.init()


def jit_train_step(config: ml_collections.ConfigDict, model: TrainSetup, mesh: jax.sharding.Mesh):
    """The train step, compiled once per mode (static), state donated and kept in its layout."""
    return jax.jit(
        functools.partial(
            train_step,
            graphdef=model.graphdef,
            optimizer=model.optimizer,
            objectives=config.objectives.to_dict(),
            itm_negative_prob=config.itm_negative_prob,
            itm_negatives=config.itm_negatives,
            microbatches=config.microbatches,
            momentum=MomentumSettings.from_config(config),
        ),
        static_argnames='step_mode',
        donate_argnums=0,
        out_shardings=(model.state_shardings, jax.NamedSharding(mesh, jax.P())),
    )


def format_table(start: dict[str, float], end: dict[str, float], metrics: tuple[str, ...]) -> str:
    """Per mode, the start and end value of each of `metrics` (the task's table metrics)."""
    rows = [f'{"mode":<8}{"metric":<24}{"start":>10}{"end":>10}']
    for key in sorted(end):
        _, mode, metric = key.split('/')
        if metric in metrics:
            rows.append(
                f'{mode:<8}{metric:<24}{start.get(key, float("nan")):>10.4f}{end[key]:>10.4f}'
            )
    return '\n'.join(rows)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
    """Trains and evaluates `config` in `workdir` (resuming what is there); the final metrics.

    The run holds the workdir's lock throughout (process 0 takes it; see workdir_lock.py)."""
    schedule = config_checks.validate(
        config, num_devices=jax.device_count(), num_processes=jax.process_count()
    )
    config_checks.check_storage(workdir, '--workdir', workdir=True)
    workdir = epath.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    is_writer = jax.process_index() == 0
    with WorkdirLock(workdir) if is_writer else contextlib.nullcontext():
        return _train_and_evaluate(config, workdir, schedule)


def _train_and_evaluate(config, workdir: epath.Path, schedule) -> dict[str, float]:
    # ---------------------------------------------------------------- devices
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
    task = tasks.get(config.task.name)
    data = task.build(config, workdir, jax.process_index(), jax.process_count())

    def global_batch(local_batch):
        """One global jax.Array per field from this process's rows."""
        return jax.tree.map(
            lambda x: jax.make_array_from_process_local_data(batch_sharding, x), local_batch
        )

    # ---------------------------------------------------------------- model, state: resume or init
    model = create_model(config, data.dims, mesh)
    # Leaving this block by any path (an error included) waits for saves still being written.
    with checkpoint.Checkpoints(
        workdir,
        keep=config.keep_checkpoints,
        best_metric=config.best_metric,
        best_metric_goal=config.best_metric_goal,
    ) as checkpoints:
        checkpoints.warn_if_short_of_space(model.abstract_state, config.keep_checkpoints)
        restored = checkpoints.restore_latest(model.abstract_state, data.train)
        if restored is not None:
            state, meta = restored
            start_metrics = meta['start_metrics']
            logging.info('resumed from the checkpoint at step %d', int(state.step))
        else:
            state, start_metrics = model.init(), None
            if config.init_from:
                params, report = pretrained.load_pretrained(
                    config.init_from, state.params, skip=tuple(config.get('init_skip', ()))
                )
                state = state.with_params(params)  # Adam's initial state does not depend on them
                logging.info('initialised from %s: %s', config.init_from, report.summary())
            elif config.get('init_bert'):
                params, report = hf_bert.load_bert(
                    config.init_bert,
                    state.params,
                    config.model,
                    extra_rows=data.dims.num_phrases,  # MVPTR's phrases after BERT's words
                )
                state = state.with_params(params)
                logging.info('initialised from BERT %s: %s', config.init_bert, report.summary())
            if config.get('init_vit'):  # with or without init_bert; config_checks refuses init_from
                params, report = vit.load_vit(config.init_vit, state.params, config.model)
                state = state.with_params(params)
                logging.info('initialised from ViT %s: %s', config.init_vit, report.summary())
        first_step = int(state.step)
        num_params = sum(x.size for x in jax.tree.leaves(state.params))
        logging.info('model: %.2fM parameters', num_params / 1e6)

        # ---------------------------------------------------------------- compiled steps
        step_fn = jit_train_step(config, model, mesh)
        eval_context = tasks.EvalContext(
            config, model.graphdef, mesh, global_batch, jax.process_index() == 0
        )

        # ---------------------------------------------------------------- evaluation at start
        log = RunLog(workdir, enabled=jax.process_index() == 0, resume_step=first_step)
        figures = None
        if config.get('eval_figures', False):  # TensorBoard images; matplotlib only then
            from semvlp_jax.plots.eval_figures import EvalFigures

            figures = EvalFigures(config, workdir, data.tokenizer, eval_context)

        def run_eval(step: int, params) -> dict[str, float]:
            results = data.evaluate(eval_context, params, step)
            log.evaluation(step, results)
            if figures is not None:
                figures.write(log, step, params)
            logging.info('eval at step %d | %s', step, headline(results, task.table_metrics))
            return results

        if start_metrics is None:
            start_metrics = run_eval(0, state.params)
        # What `inference.Predictor` rebuilds the model from, without the training config.
        meta = {
            'config': config.to_json_best_effort(),
            'dims': dataclasses.asdict(data.dims),
            'start_metrics': start_metrics,
        }

        def save(state, metrics=None) -> None:
            if checkpoints.save(state, data.train, meta=meta, metrics=metrics):
                logging.info('checkpoint at step %d', int(state.step))

        # ---------------------------------------------------------------- training loop
        progress, averager = Progress(config.total_steps, first_step), MetricAverager()
        # Steps are dispatched ahead of the device. Reading each step's metrics once the next
        # is dispatched keeps the device busy yet at most two steps from the host, so a SIGTERM
        # (a spot VM's ~30 s notice) is checkpointed within two step times plus the save.
        in_flight = StepsInFlight(max_in_flight=1)

        def finished(done_steps) -> None:
            """Logs the completed steps' metrics, a line per `log_every` steps."""
            for done, metrics in done_steps:
                averager.add(_apply_nonfinite_policy(done, metrics, config.nonfinite))
                progress.advance(done)
                if done % config.log_every == 0 or done == config.total_steps:
                    means = averager.pop()
                    log.train(done, means)
                    logging.info(
                        'step %d/%d  %s | %s',
                        done,
                        config.total_steps,
                        progress.report(done),
                        headline(means, task.table_metrics[:2]),
                    )

        with checkpoint.StopRequest(checkpoints) as stop_requested, progress:
            for step in range(first_step, config.total_steps):
                if stop_requested(step):
                    finished(in_flight.drain())
                    save(state)
                    raise Preempted(step)  # leaving the block waits for the save
                step_mode = schedule.mode(step)
                batch = global_batch(next(data.train))
                state, metrics = step_fn(state, batch, step_mode=step_mode)
                done = step + 1
                finished(in_flight.push(done, metrics))
                if done == config.total_steps:
                    break  # the final evaluation and checkpoint follow
                if done % config.eval_every == 0 or done % config.checkpoint_every == 0:
                    finished(in_flight.drain())  # history lines up to the saved step
                results = run_eval(done, state.params) if done % config.eval_every == 0 else None
                if done % config.checkpoint_every == 0 or results is not None:
                    save(state, results)
            finished(in_flight.drain())

        # ---------------------------------------------------------------- final report
        final_metrics = run_eval(config.total_steps, state.params)
        save(state, final_metrics)
        log.final(final_metrics)
        log.close()
        print(format_table(start_metrics, final_metrics, task.table_metrics), flush=True)
        return final_metrics


class Preempted(Exception):
    """The run stopped early on SIGTERM or a preemption notice, after saving a checkpoint."""

    def __init__(self, step: int):
        super().__init__(f'stopped at step {step} after saving a checkpoint; rerun to resume')
        self.step = step


class StepsInFlight:
    """The metrics of dispatched steps whose results the host has not read yet, oldest first.

    `push` adds the newest step and returns, fetched to the host, the steps that must be read
    to keep at most `max_in_flight` unread: waiting on the oldest of them bounds how far the loop
    runs ahead of the device (a stop request then finds at most that many steps to finish),
    while the device still has the newest step queued while the host prepares the next batch.
    """

    def __init__(self, max_in_flight: int):
        if max_in_flight < 1:
            raise ValueError(
                f'max_in_flight={max_in_flight}: at least the newest step is in flight'
            )
        self.max_in_flight = max_in_flight
        self._pending: list[tuple[int, dict]] = []

    def push(self, step: int, metrics: dict) -> list[tuple[int, dict]]:
        self._pending.append((step, metrics))
        excess = len(self._pending) - self.max_in_flight
        if excess <= 0:
            return []
        done, self._pending = self._pending[:excess], self._pending[excess:]
        return jax.device_get(done)

    def drain(self) -> list[tuple[int, dict]]:
        """Every step still in flight, waited for."""
        done, self._pending = self._pending, []
        return jax.device_get(done)


class NonFiniteError(FloatingPointError):
    """Too many consecutive steps with a non-finite loss or gradient (config.nonfinite)."""


def _apply_nonfinite_policy(step: int, metrics: dict, nonfinite) -> dict:
    """Metrics of one step to average: those of a skipped step are dropped, except its counters.

    Raises NonFiniteError under policy 'stop' after `max_in_a_row` skipped steps in a row.
    """
    if not metrics['skipped']:
        return metrics
    in_a_row = int(metrics['skipped_in_a_row'])
    logging.warning(
        'step %d: non-finite loss or gradient, update skipped (%d in a row)', step, in_a_row
    )
    if nonfinite.policy == 'stop' and in_a_row >= nonfinite.max_in_a_row:
        raise NonFiniteError(
            f'{in_a_row} steps in a row (the last at step {step}) had a non-finite loss or '
            f'gradient (config.nonfinite.policy=stop, max_in_a_row={nonfinite.max_in_a_row}). '
            'Their updates were skipped, so the parameters and every checkpoint are finite.'
        )
    return {k: v for k, v in metrics.items() if k in ('skipped', 'skipped_in_a_row')}
