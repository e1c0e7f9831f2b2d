"""Mixed precision: float32 parameters, bfloat16 compute, float32 heads and losses."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from semvlp_jax import train
from semvlp_jax.models.semvlp import SemVLP
from semvlp_jax.parallel.mesh import make_mesh
from tests.conftest import tiny_config


def test_bfloat16_compute_keeps_parameters_and_outputs_in_float32(tiny_data, tiny_batch):
    config = tiny_config()
    config.model.dtype = 'bfloat16'
    model = SemVLP(config.model, tiny_data.dims, rngs=nnx.Rngs(params=0))
    encoded = model(tiny_batch, mode='two')
    assert encoded.text_layers[0].dtype == jnp.bfloat16
    assert encoded.text.dtype == encoded.pooled.dtype == jnp.float32
    params = nnx.state(model, nnx.Param)
    assert {leaf.dtype for leaf in jax.tree.leaves(params)} == {jnp.dtype('float32')}


def loss_curve(tiny_data, dtype, mu_dtype='float32', steps=60):
    config = tiny_config()
    config.model.dtype = dtype
    config.optimizer.mu_dtype = mu_dtype
    config.total_steps = steps
    mesh = make_mesh({'data': 1}, devices=jax.devices()[:1])
    model, state = train.create_model_and_state(config, tiny_data.dims, mesh)
    step = train.jit_train_step(config, model, mesh)
    batches = [jax.tree.map(np.asarray, b) for b in tiny_data.val]  # fixed, same for both runs
    losses = []
    for i in range(steps):
        mode = ('single', 'two')[i % 2]
        state, metrics = step(state, batches[i % len(batches)], step_mode=mode)
        losses.append(float(metrics[f'{mode}/loss']))
    return np.array(losses), state


def test_bfloat16_trains_like_float32(tiny_data):
    f32, _ = loss_curve(tiny_data, 'float32')
    bf16, state = loss_curve(tiny_data, 'bfloat16', mu_dtype='bfloat16')
    assert np.isfinite(bf16).all()
    assert bf16[-10:].mean() < 0.6 * bf16[:2].mean(), 'bf16 run did not learn'
    # Same curve within bf16 noise: per-window means agree to a few percent.
    windows_f32, windows_bf16 = f32.reshape(6, 10).mean(1), bf16.reshape(6, 10).mean(1)
    np.testing.assert_allclose(windows_bf16, windows_f32, rtol=0.08)
    mu_dtypes = {
        leaf.dtype
        for path, leaf in jax.tree_util.tree_leaves_with_path(state.opt_state)
        if 'mu' in jax.tree_util.keystr(path)
    }
    assert mu_dtypes == {jnp.dtype('bfloat16')}
