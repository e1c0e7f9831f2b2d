"""Two processes on 127.0.0.1 train the demo config together, as one 4-device runtime."""

import json
import os
import re
import socket
import subprocess
import sys

import numpy as np

from tests.conftest import ROOT, TINY_MODEL_FLAGS

TINY = [
    '--config.total_steps=4',
    '--config.log_every=1',
    '--config.eval_every=100',
    *TINY_MODEL_FLAGS,
]


def launch(workdir, devices, *extra):
    env = dict(os.environ, XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}')
    command = [sys.executable, '-m', 'semvlp_jax.main', '--config', str(ROOT / 'configs/demo.py')]
    return subprocess.Popen(
        [*command, '--workdir', str(workdir), *TINY, *extra],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def step_lines(stderr):
    """(step, metrics) of each progress line, without the rate (which differs per process)."""
    return re.findall(r'(step \d+/4)  [^|]*\| ([^\n]*)', stderr)


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_two_processes_match_one_process_on_the_same_global_batch(tmp_path):
    port = free_port()
    shared = tmp_path / 'multihost'  # one run directory, as on a pod (a shared file system)
    workers = [
        launch(
            shared,
            2,
            '--multihost',
            f'--coordinator_address=127.0.0.1:{port}',
            '--num_processes=2',
            f'--process_id={i}',
        )
        for i in range(2)
    ]
    outputs = [w.communicate(timeout=900) for w in workers]
    for worker, (_, stderr) in zip(workers, outputs):
        assert worker.returncode == 0, stderr[-3000:]
    single = launch(tmp_path / 'single', 4)
    _, single_stderr = single.communicate(timeout=900)
    assert single.returncode == 0, single_stderr[-3000:]

    lines = [step_lines(stderr) for _, stderr in outputs]
    assert len(lines[0]) == 4
    assert lines[0] == lines[1], 'the two processes disagree'
    assert lines[0] == step_lines(single_stderr), 'two processes differ from one process'
    assert '4 devices' in outputs[0][1] and '4 devices' in single_stderr

    # One set of run files (process 0 writes them), final metrics equal to the 1-process run's,
    # and one checkpoint holding each process's input position.
    assert len(list((shared / 'tensorboard').glob('events.out.tfevents.*'))) == 1
    assert sorted(p.name for p in (shared / 'checkpoints' / '4' / 'data').glob('*.json')) == [
        'process_0-of-2.json',
        'process_1-of-2.json',
    ]
    together = json.loads((shared / 'metrics.json').read_text())
    alone = json.loads((tmp_path / 'single' / 'metrics.json').read_text())
    assert together.keys() == alone.keys()
    np.testing.assert_allclose(
        [together[k] for k in sorted(together)], [alone[k] for k in sorted(alone)], rtol=1e-4
    )
