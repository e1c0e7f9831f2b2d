"""The demo config through the real command line, in a subprocess."""

import json
import os
import pathlib
import subprocess
import sys

from tests.conftest import TINY_MODEL_FLAGS

ROOT = pathlib.Path(__file__).resolve().parents[1]


def cli_command(workdir, *overrides) -> list[str]:
    return [
        sys.executable,
        '-m',
        'semvlp_jax.main',
        '--config',
        str(ROOT / 'configs/demo.py'),
        '--workdir',
        str(workdir),
        *overrides,
    ]


# Two fake CPU devices: the mesh code runs, and the subprocess starts quickly.
CLI_ENV = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=2')


def run_cli(workdir, *overrides):
    return subprocess.run(
        cli_command(workdir, *overrides),
        cwd=ROOT,
        env=CLI_ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_demo_runs_end_to_end_and_writes_metrics(tmp_path):
    result = run_cli(
        tmp_path,
        '--config.total_steps=6',
        '--config.log_every=3',
        '--config.eval_every=4',
        *TINY_MODEL_FLAGS,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / 'metrics.json').read_text())
    for mode in ('single', 'two'):
        for metric in ('mlm_accuracy', 'itm_accuracy', 'qa_accuracy', 'loss'):
            value = metrics[f'val/{mode}/{metric}']
            assert 0.0 <= value < 100.0
    assert 'steps/s' in result.stderr and 'ETA' in result.stderr
    assert 'mlm_accuracy' in result.stdout  # the start/end table
    history = [
        json.loads(line) for line in (tmp_path / 'eval_history.jsonl').read_text().splitlines()
    ]
    assert [h['step'] for h in history] == [0, 4, 6]
    assert history[-1] == {'step': 6, **metrics}
    assert list((tmp_path / 'tensorboard').glob('events.out.tfevents.*'))
    assert (tmp_path / 'tokenizer' / 'synthetic.model').exists()


def test_invalid_config_fails_fast_naming_the_key(tmp_path):
    result = run_cli(tmp_path, '--config.model.num_cross_layers=7')
    assert result.returncode != 0
    assert 'config.model.num_cross_layers=7' in result.stderr
    assert not (tmp_path / 'tokenizer').exists(), 'work started before the config was checked'
