"""Test set-up: 8 fake CPU devices and one compilation cache (both set before JAX starts), the
command line as subprocess tests start it, and the session's shared runs.

Shared runs (`pretrained_run`, `demo_cli_run`) are made once per session. Under pytest-xdist
the tests that use one are sent to one worker (an `xdist_group` per fixture), so no two workers
make the same run.
"""

import atexit
import dataclasses
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

os.environ['XLA_FLAGS'] = (
    os.environ.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=8'
).strip()

# Compiling costs more than running on a CPU, and many tests compile the same tiny programs, in
# this process and in the command-line runs they start (which inherit the environment). One
# persistent XLA cache for the session, empty at its start, compiles each program once; what a
# test computes is the same, whether its program was compiled afresh or read back.
if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
    _cache = tempfile.mkdtemp(prefix='semvlp_jax_test_xla_cache_')
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
    os.environ['JAX_COMPILATION_CACHE_DIR'] = _cache
    os.environ['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0'
    os.environ['JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES'] = '0'

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from configs import demo  # noqa: E402
from semvlp_jax.data import pipeline  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
# A tiny random HF BERT (BertForPreTraining.save_pretrained + vocab.txt over the synthetic words)
# and its PyTorch outputs on a padded batch of sentence pairs: tools/make_bert_golden.py.
GOLDEN_BERT = ROOT / 'tests/golden/bert_tiny'
GOLDEN_BERT_OUTPUTS = ROOT / 'tests/golden/bert_tiny_outputs.npz'

# The tiny model as command-line overrides of the demo config (for subprocess tests).
TINY_MODEL_FLAGS = (
    '--config.eval_batches=1',
    '--config.batch_size=8',
    '--config.model.num_layers=2',
    '--config.model.num_cross_layers=1',
    '--config.model.hidden_size=32',
    '--config.model.num_heads=2',
    '--config.model.mlp_size=64',
)


def tiny_config():
    """The demo config shrunk so one compile + a few steps take seconds on a CPU."""
    config = demo.get_config()
    config.total_steps = 40
    config.batch_size = 8
    config.eval_batches = 1
    config.log_every = 10
    config.eval_every = 1000
    config.model.update(
        num_layers=3, num_cross_layers=1, hidden_size=32, num_heads=2, mlp_size=64, dropout_rate=0.0
    )
    config.optimizer.update(learning_rate=3e-3, warmup_steps=0)
    config.data.update(num_train=64, num_val=16, max_text_len=20)
    return config


@pytest.fixture(scope='session')
def tiny_data(tmp_path_factory):
    """Real synthetic pre-training input (trained tokenizer, masking) at batch size 8."""
    config = tiny_config()
    return pipeline.synthetic_pretraining(
        config.data, tmp_path_factory.mktemp('data'), batch_size=config.batch_size, seed=0
    )


def overridden(config, overrides: dict):
    """`config` with dotted-key `overrides` applied, as `--config.<key>=<value>` would."""
    for key, value in overrides.items():
        *parents, leaf = key.split('.')
        node = config
        for parent in parents:
            node = node[parent]
        node[leaf] = value
    return config


def compiled_training(config, dims, batch, axes: dict):
    """(model, initial state, jitted train step, `batch` on the mesh) of `config` on a mesh of
    `axes` over the first devices."""
    from semvlp_jax import train
    from semvlp_jax.parallel import mesh as mesh_lib
    from semvlp_jax.parallel import sharding

    devices = jax.devices()[: int(np.prod(list(axes.values())))]
    mesh = mesh_lib.make_mesh(axes, devices=devices)
    model, state = train.create_model_and_state(config, dims, mesh)
    step = train.jit_train_step(config, model, mesh)
    return model, state, step, jax.device_put(batch, sharding.batch_sharding(mesh))


def override_flags(overrides: dict) -> tuple[str, ...]:
    """The command-line flags of `overrides`."""
    return tuple(f'--config.{key}={value}' for key, value in overrides.items())


# Two fake CPU devices for command-line runs: the mesh code runs, and the subprocess starts
# quickly. The compilation cache set above is inherited.
CLI_ENV = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=2')


def cli_command(workdir, *overrides, config: str = 'configs/demo.py') -> list[str]:
    """`python -m semvlp_jax.main` on `config` (the demo's by default), as a user types it."""
    return [
        sys.executable,
        '-m',
        'semvlp_jax.main',
        '--config',
        str(ROOT / config),
        '--workdir',
        str(workdir),
        *overrides,
    ]


def run_cli(workdir, *overrides, config: str = 'configs/demo.py') -> subprocess.CompletedProcess:
    """`cli_command` to its end, its output captured."""
    return subprocess.run(
        cli_command(workdir, *overrides, config=config),
        cwd=ROOT,
        env=CLI_ENV,
        capture_output=True,
        text=True,
        timeout=900,
    )


# The session's one full command-line run of the demo config (tiny model): the reference the
# interrupted-and-resumed runs are compared with, and the end-to-end check of what a run writes.
DEMO_RUN_STEPS = 100
DEMO_RUN_FLAGS = (
    *TINY_MODEL_FLAGS,
    f'--config.total_steps={DEMO_RUN_STEPS}',
    '--config.log_every=1',  # one history line per step: per-step losses to compare
    '--config.checkpoint_every=10',
    '--config.eval_every=40',  # and at the end, step 100, off that grid
    '--config.data.num_val=16',
)

# Runs several tests read (session or module fixtures): each made once, on one worker.
SHARED_RUNS = ('pretrained_run', 'demo_cli_run', 'bert_vqa_run', 'simla_cli_run', 'mvptr_cli_run')


def pytest_collection_modifyitems(items):
    for item in items:
        for name in SHARED_RUNS:
            if name in getattr(item, 'fixturenames', ()):
                item.add_marker(pytest.mark.xdist_group(name))


@dataclasses.dataclass(frozen=True)
class CliRun:
    workdir: pathlib.Path
    stdout: str
    stderr: str


@pytest.fixture(scope='session')
def demo_cli_run(tmp_path_factory) -> CliRun:
    """The demo config through `python -m semvlp_jax.main`, uninterrupted (DEMO_RUN_FLAGS)."""
    workdir = tmp_path_factory.mktemp('demo_cli_run')
    result = run_cli(workdir, *DEMO_RUN_FLAGS)
    assert result.returncode == 0, result.stderr[-3000:]
    return CliRun(workdir, result.stdout, result.stderr)


@pytest.fixture(scope='session')
def pretrained_run(tmp_path_factory):
    """The one tiny pre-training run of the session (2 steps through the trainer): the
    checkpoint, tokenizer and final metrics that every fine-tune and loading test starts from."""
    from semvlp_jax import train

    config = tiny_config()
    config.total_steps = 2
    workdir = tmp_path_factory.mktemp('pretrain')
    train.train_and_evaluate(config, str(workdir))
    return workdir


@pytest.fixture(scope='session')
def tiny_batch(tiny_data):
    return jax.tree.map(np.asarray, next(iter(tiny_data.val)))


@pytest.fixture(scope='session')
def bert_vqa_run(tmp_path_factory):
    """The session's VQA fine-tune started from the golden BERT (`bert=` of the fine-tune
    config): one step whose learning rate is 0 (the warm-up's first), so the checkpoint holds
    the imported parameters as the trainer placed them. What it logged is kept in `log.txt`."""
    import logging

    from configs import finetune_vqa
    from semvlp_jax import train

    config = finetune_vqa.get_config(f'bert={GOLDEN_BERT},mode=two')
    config.task.answer_min_count = 1
    config.data.update(num_train=64, num_val=16, max_text_len=20)
    config.update(total_steps=1, eval_every=1, log_every=1, checkpoint_every=1, batch_size=8)
    config.eval_batches = 1
    workdir = tmp_path_factory.mktemp('bert_vqa')
    handler = logging.FileHandler(workdir / 'log.txt')
    absl_logger = logging.getLogger('absl')
    level = absl_logger.level
    absl_logger.setLevel(logging.INFO)
    absl_logger.addHandler(handler)
    try:
        train.train_and_evaluate(config, str(workdir))
    finally:
        absl_logger.removeHandler(handler)
        absl_logger.setLevel(level)
        handler.close()
    return workdir
