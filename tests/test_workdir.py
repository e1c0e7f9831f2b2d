"""Workdir safety: the exclusive lock, a full disk, object-store paths; and the calm console."""

import errno
import json
import logging
import os
import socket
import subprocess
import sys
import time

import grain
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from semvlp_jax import checkpoint, config_checks, progress, train, workdir_lock
from semvlp_jax.errors import is_disk_full
from semvlp_jax.train_step import TrainState
from semvlp_jax.workdir_lock import WorkdirLock, WorkdirLocked
from tests.conftest import CLI_ENV, ROOT, cli_command, tiny_config

# ---------------------------------------------------------------------------- the lock


def lock_file(workdir, **holder) -> None:
    now = time.time()
    fields = dict(host=socket.gethostname(), pid=os.getpid(), started=now, heartbeat=now)
    (workdir / workdir_lock.LOCK_FILE).write_text(json.dumps({**fields, 'token': 'x', **holder}))


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, '-c', 'pass'])
    process.wait()
    return process.pid


def test_a_second_writer_is_refused_naming_the_holder(tmp_path):
    with WorkdirLock(tmp_path) as first:
        written = json.loads((tmp_path / 'workdir.lock').read_text())
        assert written['pid'] == os.getpid() and written['host'] == socket.gethostname()
        assert abs(written['started'] - time.time()) < 60
        with pytest.raises(WorkdirLocked, match=f'in use by another run \\(pid {os.getpid()} on'):
            WorkdirLock(tmp_path).acquire()
        assert first.read().token == first.holder.token  # the refusal left the lock alone
    assert not (tmp_path / 'workdir.lock').exists()  # released at the end


def test_a_stale_lock_of_a_dead_process_on_this_host_is_taken_over(tmp_path, caplog):
    lock_file(tmp_path, pid=dead_pid(), heartbeat=time.time())  # a fresh heartbeat, yet dead
    with caplog.at_level(logging.WARNING), WorkdirLock(tmp_path) as lock:
        assert lock.read().pid == os.getpid()
    assert 'taking over the stale lock' in caplog.text


def test_a_lock_of_another_host_is_stale_only_after_its_heartbeat_stops(tmp_path):
    lock_file(tmp_path, host='other-vm', pid=1, heartbeat=time.time() - 10)
    with pytest.raises(WorkdirLocked, match='pid 1 on host other-vm'):
        WorkdirLock(tmp_path, stale_after_seconds=60).acquire()
    lock_file(tmp_path, host='other-vm', pid=1, heartbeat=time.time() - 61)
    with WorkdirLock(tmp_path, stale_after_seconds=60) as lock:
        assert lock.read().host == socket.gethostname()


def test_the_holder_renews_its_heartbeat_and_leaves_another_holders_lock(tmp_path):
    lock = WorkdirLock(tmp_path, heartbeat_seconds=0.05).acquire()
    first = lock.read().heartbeat
    time.sleep(0.3)
    assert lock.read().heartbeat > first
    lock_file(tmp_path, host='other-vm', pid=1)  # taken over behind its back
    lock.release()
    assert json.loads((tmp_path / 'workdir.lock').read_text())['host'] == 'other-vm'


def test_the_trainer_refuses_a_locked_workdir_before_writing_anything(tmp_path):
    with WorkdirLock(tmp_path):
        with pytest.raises(WorkdirLocked):
            train.train_and_evaluate(tiny_config(), str(tmp_path))
        assert sorted(p.name for p in tmp_path.iterdir()) == ['workdir.lock']


def test_the_command_line_refuses_a_locked_workdir_in_one_line(tmp_path):
    with WorkdirLock(tmp_path):
        result = subprocess.run(
            cli_command(tmp_path), cwd=ROOT, env=CLI_ENV, capture_output=True, text=True
        )
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if 'in use by another run' in line]
    assert len(errors) == 1 and f'pid {os.getpid()}' in errors[0], result.stderr[-2000:]
    assert 'Traceback' not in result.stderr


# ---------------------------------------------------------------------------- a full disk


def small_state(step: int) -> TrainState:
    params = {'w': jax.random.normal(jax.random.key(step), (1000,))}
    return TrainState.create(params, {'m': jnp.zeros(1000)}, jax.random.key(0)).replace(
        step=jnp.int32(step)
    )


def data_iterator():
    return iter(grain.MapDataset.range(100).batch(2).to_iter_dataset())


def test_no_room_for_a_checkpoint_is_one_clear_error_and_the_previous_survives(
    tmp_path, monkeypatch
):
    with checkpoint.Checkpoints(tmp_path, keep=3) as checkpoints:
        assert checkpoints.save(small_state(1), data_iterator(), meta={})
        checkpoints.wait()
        monkeypatch.setattr(checkpoint, 'free_bytes', lambda directory: 1000)
        with pytest.raises(checkpoint.DiskFullError) as raised:
            checkpoints.save(small_state(2), data_iterator(), meta={})
        assert checkpoints.steps() == [1]
    message = str(raised.value)
    assert message.startswith('no space for the checkpoint at step 2 in ')
    assert str(tmp_path / 'checkpoints') in message and '0.0 MiB free' in message
    assert 'the checkpoint at step 1 is intact' in message
    assert raised.value.errno == errno.ENOSPC


def test_a_write_that_runs_out_of_space_removes_the_partial_checkpoint(tmp_path, monkeypatch):
    with checkpoint.Checkpoints(tmp_path, keep=3) as checkpoints:
        assert checkpoints.save(small_state(1), data_iterator(), meta={})
        checkpoints.wait()

        def full_disk(step, **kwargs):  # what orbax leaves when the disk fills mid-write
            (tmp_path / 'checkpoints' / f'{step}.orbax-checkpoint-tmp' / 'state').mkdir(
                parents=True
            )
            raise ValueError('RESOURCE_EXHAUSTED: [OS error 28: No space left on device]')

        monkeypatch.setattr(checkpoints._manager, 'save', full_disk)
        with pytest.raises(checkpoint.DiskFullError, match='step 1 is intact'):
            checkpoints.save(small_state(2), data_iterator(), meta={})
        assert sorted(p.name for p in (tmp_path / 'checkpoints').iterdir()) == ['1']
    restored = ocp.PyTreeCheckpointer().restore(tmp_path / 'checkpoints' / '1' / 'state')
    np.testing.assert_array_equal(restored['params']['w'], small_state(1).params['w'])


def test_a_warning_at_start_when_few_checkpoints_fit(tmp_path, monkeypatch, caplog):
    checkpoints = checkpoint.Checkpoints(tmp_path, keep=3)
    state = small_state(1)
    size = checkpoint.saved_bytes(state)
    assert size == 2 * 1000 * 4 + 3 * 4  # params, Adam's m; the step and two skip counters
    monkeypatch.setattr(checkpoint, 'free_bytes', lambda directory: 2 * size)
    with caplog.at_level(logging.WARNING):
        checkpoints.warn_if_short_of_space(state, keep=3)
    assert 'room for 2 checkpoint(s)' in caplog.text
    caplog.clear()
    monkeypatch.setattr(checkpoint, 'free_bytes', lambda directory: 4 * size)
    checkpoints.warn_if_short_of_space(state, keep=3)
    assert caplog.text == ''
    checkpoints.close()


def test_disk_full_errors_are_recognised_through_their_causes():
    try:
        try:
            raise OSError(errno.ENOSPC, 'No space')
        except OSError as e:
            raise RuntimeError('save failed') from e
    except RuntimeError as e:
        assert is_disk_full(e)
    assert is_disk_full(ValueError('Failed writing: No space left on device'))
    assert not is_disk_full(OSError(errno.EACCES, 'Permission denied'))


def record(message, path='/x/orbax/checkpoint_manager.py', level=logging.ERROR, exc=None):
    return logging.LogRecord('absl', level, path, 1, message, (), exc)


def test_the_console_drops_orbax_disk_full_tracebacks_and_probe_noise_only():
    disk_full = ValueError('Failed writing: No space left on device')
    assert not progress.quiet_libraries(
        record('Save Finalize thread failed.', exc=(ValueError, disk_full, None))
    )
    assert progress.quiet_libraries(record('Save Finalize thread failed.', path='/x/mine.py'))
    assert progress.quiet_libraries(record('a real orbax error'))
    probe = "Unable to initialize backend 'tpu': INTERNAL: Failed to open libtpu.so"
    assert not progress.quiet_libraries(record(probe, '/x/jax/_src/xla_bridge.py', logging.INFO))
    assert progress.quiet_libraries(record(probe, '/x/jax/_src/xla_bridge.py', logging.WARNING))
    assert not progress.quiet_libraries(record('Saving', '/x/orbax/a.py', logging.INFO))
    assert progress.quiet_libraries(record('step 10/100', '/x/semvlp_jax/train.py', logging.INFO))


def test_the_progress_line_shows_the_loss_and_headline_metrics_per_mode():
    means = {
        'single/loss': 3.21,
        'single/itm_accuracy': 0.7123,
        'single/mlm_accuracy': 0.5,
        'single/qa_accuracy': 0.4,
        'two/loss': 3.0,
        'two/itm_accuracy': 0.8,
        'grad_norm': 2.0,
    }
    assert progress.headline(means, ('itm_accuracy', 'mlm_accuracy')) == (
        'single loss 3.210 itm 0.712 mlm 0.500 | two loss 3.000 itm 0.800'
    )
    results = {'val/two/vqa_accuracy': 0.5, 'val/two/loss': 1.0}
    assert progress.headline(results, ('vqa_accuracy', 'loss')) == 'two loss 1.000 vqa 0.500'


# ---------------------------------------------------------------------------- object stores


def test_a_gs_workdir_without_gcs_support_is_refused_clearly(monkeypatch):
    monkeypatch.setattr(config_checks, '_installed', lambda module: module != 'gcsfs')
    with pytest.raises(config_checks.ConfigError, match=r"--workdir='gs://b/run' is on gs://"):
        config_checks.check_storage('gs://b/run', '--workdir', workdir=True)
    with pytest.raises(config_checks.ConfigError, match=r"pip install -e '\.\[gcs\]'"):
        config_checks.check_storage('gs://b/data', 'config.data.data_dir')
    config_checks.check_storage('/local/run', '--workdir', workdir=True)
    monkeypatch.setattr(config_checks, '_installed', lambda module: True)
    config_checks.check_storage('gs://b/run', '--workdir', workdir=True)


def test_histories_rewritten_whole_on_an_object_store_read_like_appended_ones(tmp_path):
    appended = progress.History(tmp_path / 'a.jsonl', resume_step=0)
    rewritten = progress.History(tmp_path / 'b.jsonl', resume_step=0)
    rewritten._file.close()
    rewritten._file = None  # the object-store path: no append, the object rewritten whole
    for step in (1, 2, 3):
        appended.append({'step': step, 'loss': 1.0 / step})
        rewritten.append({'step': step, 'loss': 1.0 / step})
    appended.close()
    assert (tmp_path / 'a.jsonl').read_text() == (tmp_path / 'b.jsonl').read_text()
    resumed = progress.History(tmp_path / 'b.jsonl', resume_step=2)
    resumed.close()
    assert [r['step'] for r in progress.read_history(tmp_path / 'b.jsonl')] == [1, 2]
