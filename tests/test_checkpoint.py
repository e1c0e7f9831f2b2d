"""Checkpoints: exact resume after SIGKILL / SIGTERM, other meshes, damaged files, NaN policy,
incompatible configs and fine-tune loading."""

import dataclasses
import json
import logging
import pathlib
import random
import signal
import subprocess
import time

import grain
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from semvlp_jax import checkpoint, pretrained, train, train_step
from semvlp_jax.models.encoder import stack_layers, unstack_layers
from semvlp_jax.parallel import mesh as mesh_lib
from semvlp_jax.parallel import sharding
from semvlp_jax.progress import read_history
from tests.conftest import (
    CLI_ENV,
    DEMO_RUN_FLAGS,
    DEMO_RUN_STEPS,
    ROOT,
    cli_command,
    tiny_config,
)


def start_run(workdir) -> subprocess.Popen:
    """The session's demo command-line run (`demo_cli_run`), started afresh in `workdir`."""
    return subprocess.Popen(
        cli_command(workdir, *DEMO_RUN_FLAGS),
        cwd=ROOT,
        env=CLI_ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen) -> tuple[int, str]:
    _, stderr = process.communicate(timeout=600)
    return process.returncode, stderr


def last_logged_step(workdir: pathlib.Path) -> int:
    path = workdir / 'train_history.jsonl'
    try:
        return read_history(path)[-1]['step']
    except (FileNotFoundError, IndexError, ValueError):  # not there yet, or a half-written line
        return 0


def interrupt_at(workdir, step: int, sig: int) -> tuple[int, str, int]:
    """Starts a run and sends `sig` once it has logged `step`; also returns the last step logged
    before the signal."""
    process = start_run(workdir)
    while (logged := last_logged_step(workdir)) < step and process.poll() is None:
        time.sleep(0.02)
    process.send_signal(sig)
    return *finish(process), logged


def checkpoint_steps(workdir) -> list[int]:
    return sorted(int(p.name) for p in (workdir / 'checkpoints').iterdir() if p.name.isdigit())


def final_state(workdir) -> dict:
    step_dir = workdir / 'checkpoints' / str(checkpoint_steps(workdir)[-1])
    return ocp.PyTreeCheckpointer().restore(step_dir / 'state')


def losses_by_step(workdir) -> dict[int, dict]:
    return {record['step']: record for record in read_history(workdir / 'train_history.jsonl')}


@pytest.mark.parametrize('sig', [signal.SIGKILL, signal.SIGTERM], ids=['SIGKILL', 'SIGTERM'])
def test_interrupted_run_resumes_bit_identically(demo_cli_run, tmp_path, sig):
    uninterrupted = demo_cli_run.workdir
    kill_step = random.Random(sig).randint(15, 70)
    code, stderr, logged_before = interrupt_at(tmp_path, kill_step, sig)
    stopped_at = last_logged_step(tmp_path)
    assert stopped_at < DEMO_RUN_STEPS, 'the run ended before the signal; nothing was tested'
    steps = checkpoint_steps(tmp_path)  # a kill mid-save leaves a tmp directory: not a step
    if sig == signal.SIGTERM:
        assert code == 143, stderr[-3000:]
        # It saved where it stopped: no step is lost.
        assert steps[-1] == stopped_at, (steps, stopped_at)
        # And soon: the loop runs at most two steps ahead of what it has logged, so a short
        # preemption notice is not spent finishing steps dispatched long before.
        assert steps[-1] <= logged_before + 2, (steps[-1], logged_before)
    else:
        assert code == -signal.SIGKILL
        assert steps and steps[-1] <= stopped_at

    code, stderr = finish(start_run(tmp_path))
    assert code == 0, stderr[-3000:]
    assert f'resumed from the checkpoint at step {steps[-1]}' in stderr

    want, got = losses_by_step(uninterrupted), losses_by_step(tmp_path)
    assert sorted(got) == list(range(1, DEMO_RUN_STEPS + 1))
    for step in range(1, DEMO_RUN_STEPS + 1):
        assert got[step] == want[step], f'step {step} differs after resuming at {steps[-1]}'
    jax.tree.map(np.testing.assert_array_equal, final_state(tmp_path), final_state(uninterrupted))


# ---------------------------------------------------------------------------- in-process tests


def test_steps_in_flight_reads_all_but_the_newest_step():
    in_flight = train.StepsInFlight(max_in_flight=1)
    assert in_flight.push(1, {'loss': jnp.float32(1.0)}) == []
    done = in_flight.push(2, {'loss': jnp.float32(2.0)})
    assert [(step, float(m['loss'])) for step, m in done] == [(1, 1.0)]
    assert isinstance(done[0][1]['loss'], np.ndarray)  # fetched to the host, i.e. waited on
    assert [step for step, _ in in_flight.push(3, {'loss': jnp.float32(3.0)})] == [2]
    assert [step for step, _ in in_flight.drain()] == [3]
    assert in_flight.drain() == []
    wider = train.StepsInFlight(max_in_flight=2)
    assert [[s for s, _ in wider.push(step, {}) or []] for step in (1, 2, 3)] == [[], [], [1]]
    with pytest.raises(ValueError, match='max_in_flight=0'):
        train.StepsInFlight(max_in_flight=0)


def data_iterator(position: int = 0):
    iterator = iter(grain.MapDataset.range(1000).batch(2).to_iter_dataset())
    for _ in range(position):
        next(iterator)
    return iterator


def model_and_state(tiny_data, axes, preset='data_parallel', **model_overrides):
    config = tiny_config()
    config.parallel.preset = preset
    config.model.update(**model_overrides)
    devices = jax.devices()[: int(np.prod(list(axes.values())))]
    mesh = mesh_lib.make_mesh(axes, devices=devices)
    model, state = train.create_model_and_state(config, tiny_data.dims, mesh)
    return config, mesh, model, state


def trained(config, mesh, model, state, batch, steps=2):
    step_fn = train.jit_train_step(config, model, mesh)
    batch = jax.device_put(batch, sharding.batch_sharding(mesh))
    for i in range(steps):
        state, _ = step_fn(state, batch, step_mode=('single', 'two')[i % 2])
    return state


def save(workdir, state, position=3, **kwargs):
    checkpoints = checkpoint.Checkpoints(workdir, keep=3, **kwargs)
    assert checkpoints.save(state, data_iterator(position), meta={'start_metrics': {}})
    checkpoints.wait()
    checkpoints.close()


def restore(workdir, model):
    iterator = data_iterator()
    restored = checkpoint.Checkpoints(workdir, keep=3).restore_latest(
        model.abstract_state, iterator
    )
    return restored, iterator


def test_restore_onto_a_different_mesh(tiny_data, tiny_batch, tmp_path):
    # The meshes of test_sharding's runs, so that their compiled steps are reused.
    config, mesh, model, state = model_and_state(
        tiny_data, {'data': 2, 'fsdp': 4, 'tensor': 1}, 'fsdp'
    )
    state = trained(config, mesh, model, state, tiny_batch)
    save(tmp_path, state, position=5)

    config2, mesh2, model2, _ = model_and_state(tiny_data, {'data': 8, 'fsdp': 1, 'tensor': 1})
    (restored, meta), iterator = restore(tmp_path, model2)
    assert int(restored.step) == 2 and meta['step'] == 2
    np.testing.assert_array_equal(next(iterator), [10, 11])  # the data position came back too
    jax.tree.map(
        np.testing.assert_array_equal,
        jax.device_get(checkpoint.to_saved(restored)),
        jax.device_get(checkpoint.to_saved(state)),
    )
    kernel = restored.params['encoder']['layers'][0]['feed_forward']['expand']['kernel']
    assert kernel.sharding.mesh.devices.size == 8 and kernel.sharding.spec == jax.P(None, None)
    # And it trains on, on the new mesh.
    assert int(trained(config2, mesh2, model2, restored, tiny_batch, steps=1).step) == 3


def test_keeps_the_latest_and_the_best_evaluated_checkpoint(tiny_data, tmp_path):
    _, _, _, state = model_and_state(tiny_data, {'data': 1})
    metric = 'val/two/itm_accuracy'
    with checkpoint.Checkpoints(tmp_path, keep=2, best_metric=metric) as checkpoints:
        for step, accuracy in [(1, 0.7), (2, 0.9), (3, 0.5), (4, None), (5, None)]:
            metrics = None if accuracy is None else {metric: accuracy}
            checkpoints.save(
                state.replace(step=jnp.int32(step)), data_iterator(), meta={}, metrics=metrics
            )
        checkpoints.wait()
        assert checkpoints.steps() == [2, 4, 5]


def test_damaged_latest_checkpoint_falls_back_to_the_previous_one(tiny_data, tmp_path, caplog):
    _, _, model, state = model_and_state(tiny_data, {'data': 1})
    save(tmp_path, state.replace(step=jnp.int32(10)), position=10)
    save(tmp_path, state.replace(step=jnp.int32(20)), position=20)
    for f in (tmp_path / 'checkpoints' / '20' / 'state').rglob('*'):
        if f.is_file() and f.parent.name == 'd':  # array data: cut every file in half
            f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])

    (restored, meta), iterator = restore(tmp_path, model)
    assert int(restored.step) == 10 and meta['step'] == 10
    np.testing.assert_array_equal(next(iterator), [20, 21])
    assert (tmp_path / 'corrupt_checkpoints' / '20').is_dir()
    assert sorted(p.name for p in (tmp_path / 'checkpoints').iterdir()) == ['10']
    assert 'checkpoint at step 20 cannot be restored' in caplog.text


def test_values_that_differ_from_the_written_fingerprint_are_detected():
    tree = {'a': jnp.arange(6.0).reshape(2, 3), 'b': jnp.ones(4)}
    written = checkpoint.fingerprint(tree)
    assert checkpoint.fingerprints_match(written, checkpoint.fingerprint(tree))
    flipped = {**tree, 'a': tree['a'].at[1, 2].set(-5.0)}
    assert not checkpoint.fingerprints_match(written, checkpoint.fingerprint(flipped))


def test_checkpoint_of_another_model_lists_the_mismatched_keys(tiny_data, tmp_path):
    _, _, _, state = model_and_state(tiny_data, {'data': 1})
    save(tmp_path, state)
    _, _, wider, _ = model_and_state(tiny_data, {'data': 1}, hidden_size=48, num_heads=2)
    with pytest.raises(checkpoint.CheckpointMismatchError) as error:
        restore(tmp_path, wider)
    message = str(error.value)
    assert (
        'shape differs: params/encoder/layers/0/self_attention/query/kernel checkpoint (32, 32) '
        'vs model (48, 48)' in message
    )
    assert 'and' in message and 'more' in message  # long lists are cut, with a count
    assert (tmp_path / 'checkpoints' / '0').is_dir(), 'a mismatch must not move the checkpoint'


def test_checkpoint_of_another_process_count_is_refused_not_set_aside(tiny_data, tmp_path):
    _, _, model, state = model_and_state(tiny_data, {'data': 1})
    save(tmp_path, state)
    data = tmp_path / 'checkpoints' / '0' / 'data'
    (data / 'process_0-of-1.json').rename(data / 'process_0-of-2.json')
    with pytest.raises(checkpoint.CheckpointMismatchError, match='process 0 of 1'):
        restore(tmp_path, model)
    assert (tmp_path / 'checkpoints' / '0').is_dir()


# ---------------------------------------------------------------------------- non-finite steps


def test_nan_batch_skips_the_update_and_counts_it(tiny_data, tiny_batch):
    config, mesh, model, state = model_and_state(tiny_data, {'data': 1})
    step_fn = train.jit_train_step(config, model, mesh)
    poisoned = dict(tiny_batch, region_features=np.full_like(tiny_batch['region_features'], np.nan))
    before = jax.device_get(checkpoint.to_saved(state))

    state, metrics = step_fn(state, poisoned, step_mode='two')
    assert int(metrics['skipped']) == 1 and int(metrics['skipped_in_a_row']) == 1
    after = jax.device_get(checkpoint.to_saved(state))
    jax.tree.map(np.testing.assert_array_equal, after['params'], before['params'])
    jax.tree.map(np.testing.assert_array_equal, after['opt_state'], before['opt_state'])
    assert after['step'] == 1 and after['skipped_steps'] == 1

    state, _ = step_fn(state, poisoned, step_mode='single')
    state, metrics = step_fn(state, tiny_batch, step_mode='single')
    assert int(metrics['skipped']) == 0
    assert (int(state.skipped_steps), int(state.skipped_in_a_row), int(state.step)) == (2, 0, 3)
    assert not np.array_equal(
        jax.device_get(state.params['pooler']['dense']['kernel']),
        before['params']['pooler']['dense']['kernel'],
    )


def test_a_state_with_nan_is_never_written(tiny_data, tmp_path):
    _, _, _, state = model_and_state(tiny_data, {'data': 1})
    params = jax.tree.map(lambda x: x, state.params)
    params['pooler']['dense']['bias'] = params['pooler']['dense']['bias'].at[0].set(jnp.inf)
    checkpoints = checkpoint.Checkpoints(tmp_path, keep=2)
    assert not checkpoints.save(state.replace(params=params), data_iterator(), meta={})
    checkpoints.wait()
    assert checkpoints.steps() == []


def poison_steps(steps):
    """train_step with NaN region features at the given steps (decided inside the jitted step)."""

    def poisoned_step(state, batch, **kwargs):
        bad = jnp.isin(state.step, jnp.asarray(steps))
        features = jnp.where(bad, jnp.nan, batch['region_features'])
        return train_step.train_step(state, dict(batch, region_features=features), **kwargs)

    return poisoned_step


def all_checkpoints_finite(workdir) -> list[int]:
    steps = []
    for step_dir in (workdir / 'checkpoints').iterdir():
        state = ocp.PyTreeCheckpointer().restore(step_dir / 'state')
        assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state)), step_dir
        steps.append(int(step_dir.name))
    return sorted(steps)


def nonfinite_config(policy):
    config = tiny_config()
    config.update(total_steps=12, log_every=4, checkpoint_every=3, eval_every=1000)
    config.nonfinite.update(policy=policy, max_in_a_row=3)
    config.data.update(num_train=256)
    return config


def test_skip_policy_trains_on_past_nan_batches(tmp_path, monkeypatch):
    monkeypatch.setattr(train, 'train_step', poison_steps([4, 5, 6, 7]))
    train.train_and_evaluate(nonfinite_config('skip'), tmp_path)
    history = losses_by_step(tmp_path)
    assert history[8]['train/skipped'] == 1.0  # steps 5..8 (0-based 4..7) all skipped
    assert history[12]['train/skipped'] == 0.0
    assert np.isfinite(history[8].get('train/grad_norm', 0.0)), 'skipped metrics were averaged'
    assert all_checkpoints_finite(tmp_path)[-1] == 12
    final = ocp.PyTreeCheckpointer().restore(tmp_path / 'checkpoints' / '12' / 'state')
    assert int(final['skipped_steps']) == 4 and int(final['skipped_in_a_row']) == 0


def test_stop_policy_stops_after_n_in_a_row_and_checkpoints_stay_finite(tmp_path, monkeypatch):
    monkeypatch.setattr(train, 'train_step', poison_steps([4, 5, 6, 7]))
    with pytest.raises(train.NonFiniteError, match=r'3 steps in a row \(the last at step 7\)'):
        train.train_and_evaluate(nonfinite_config('stop'), tmp_path)
    assert all_checkpoints_finite(tmp_path) == [3, 6]


# ---------------------------------------------------------------------------- fine-tuning


def test_fine_tuning_loads_matching_parameters_and_reports_new_and_dropped(tiny_data, tmp_path):
    _, _, _, source = model_and_state(tiny_data, {'data': 1}, share_cross_attention=False)
    save(tmp_path, source)

    config = tiny_config()
    dims = dataclasses.replace(tiny_data.dims, num_answers=7)  # a new task's answer set
    mesh = mesh_lib.make_mesh({'data': 1}, devices=jax.devices()[:1])
    _, fresh = train.create_model_and_state(config, dims, mesh)
    params, report = pretrained.load_pretrained(tmp_path, fresh.params)

    assert report.new == ['answer_head/classifier/bias', 'answer_head/classifier/kernel']
    assert any('cross_attention/image_to_text' in name for name in report.dropped)
    assert 'encoder/layers/0/self_attention/query/kernel' in report.loaded
    assert len(report.loaded) + len(report.new) == len(jax.tree.leaves(fresh.params))
    flat = lambda tree: {  # noqa: E731
        key: np.asarray(x) for key, x in checkpoint.flat_leaves(jax.device_get(tree)).items()
    }
    got, old, new = flat(params), flat(source.params), flat(fresh.params)
    for name in report.loaded:
        np.testing.assert_array_equal(got[name], old[name], err_msg=name)
    for name in report.new:
        np.testing.assert_array_equal(got[name], new[name], err_msg=name)
    assert 'loaded' in report.summary() and 'dropped' in report.summary()


@pytest.mark.parametrize(
    'saved_scanned, visual_stage',
    [(False, False), (True, False), (False, True), (True, True)],
    ids=['unrolled_in', 'scanned_in', 'unrolled_in_with_a_visual_stage', 'scanned_in_with_one'],
)
def test_pretrained_loading_converts_between_encoder_layouts(
    tiny_data, tmp_path, saved_scanned, visual_stage
):
    """A checkpoint with the encoder unrolled (`layers/<i>`) loads into a scan_layers model
    (`stacks/<j>`) and the reverse, an MVPTR model's visual stage too (`visual_stage/stack` <->
    `visual_stage/layers/<i>`); every leaf loads, onto the fine-tune's own mesh."""
    layout = {'separate_visual_layers': visual_stage}
    config, _, _, source = model_and_state(
        tiny_data, {'data': 1}, scan_layers=saved_scanned, **layout
    )
    # Every value distinct from a fresh initialisation, so nothing passes by coincidence.
    source = source.replace(params=jax.tree.map(lambda x: x + 1.0, source.params))
    save(tmp_path, source)

    _, _, _, fresh = model_and_state(
        tiny_data,
        {'data': 1, 'fsdp': 8, 'tensor': 1},
        'fsdp',
        scan_layers=not saved_scanned,
        **layout,
    )
    params, report = pretrained.load_pretrained(tmp_path, fresh.params)

    assert report.new == [] and report.dropped == []
    assert len(report.loaded) == len(jax.tree.leaves(fresh.params))
    layers = 'layers' if saved_scanned else 'stacks'
    assert f'encoder/{layers}/0/self_attention/query/kernel' in report.loaded
    if visual_stage:
        visual = 'layers/0' if saved_scanned else 'stack'
        assert f'encoder/visual_stage/{visual}/self_attention/query/kernel' in report.loaded
    old = jax.device_get(source.params)
    encoder = old['encoder']
    if saved_scanned:
        converted = unstack_layers(encoder)
    else:
        converted = stack_layers(encoder, config.model.num_layers, config.model.num_cross_layers)
    # Same tree (the model's layout) and exactly the stacked or sliced original values.
    jax.tree.map(
        np.testing.assert_array_equal, jax.device_get(params), {**old, 'encoder': converted}
    )
    shardings = lambda tree: [x.sharding for x in jax.tree.leaves(tree)]  # noqa: E731
    assert shardings(params) == shardings(fresh.params)


def test_missing_pretrained_checkpoint_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match='config.init_from'):
        pretrained.load_pretrained(tmp_path / 'nowhere', {})


def test_init_from_starts_the_run_from_the_pretrained_parameters(pretrained_run, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger='absl')
    pretrain_final = json.loads((pretrained_run / 'metrics.json').read_text())
    config = tiny_config()
    config.update(total_steps=1, checkpoint_every=1, init_from=str(pretrained_run))
    train.train_and_evaluate(config, tmp_path / 'finetune')
    start = read_history(tmp_path / 'finetune' / 'eval_history.jsonl')[0]
    assert start.pop('step') == 0
    # Same parameters, same validation batches: the fine-tune starts where pre-training ended.
    assert start == pytest.approx(pretrain_final, rel=1e-6)
    assert 'initialised from' in caplog.text and 'dropped 0' in caplog.text
