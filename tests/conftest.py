"""Test set-up: 8 fake CPU devices (set before JAX starts) and small shared fixtures."""

import os

os.environ['XLA_FLAGS'] = (
    os.environ.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=8'
).strip()

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from configs import demo  # noqa: E402
from semvlp_jax.data import pipeline  # noqa: E402

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
