"""Scan-over-layers (`config.model.scan_layers`): the same function as the unrolled layer list."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from semvlp_jax import diagnostics, train
from semvlp_jax.models.encoder import stack_layers
from semvlp_jax.models.semvlp import SemVLP
from semvlp_jax.parallel import mesh as mesh_lib
from semvlp_jax.parallel import sharding
from tests.conftest import tiny_config


def scanned_like(params: dict, model_config) -> dict:
    """Unrolled parameters (pure dict) in the scanned layout."""
    encoder = stack_layers(
        params['encoder'], model_config.num_layers, model_config.num_cross_layers
    )
    return {**params, 'encoder': encoder}


def model_pair(tiny_data, **overrides):
    """An unrolled model and a scanned model holding the same parameters."""
    config = tiny_config()
    config.model.update(**overrides)
    unrolled = SemVLP(config.model, tiny_data.dims, rngs=nnx.Rngs(params=0))
    config.model.scan_layers = True
    scanned = SemVLP(config.model, tiny_data.dims, rngs=nnx.Rngs(params=1))
    params = nnx.to_pure_dict(nnx.state(unrolled, nnx.Param))
    stacked = nnx.state(scanned, nnx.Param)
    nnx.replace_by_pure_dict(stacked, scanned_like(params, config.model))
    nnx.update(scanned, stacked)
    return unrolled, scanned, config.model


@pytest.mark.parametrize('layers, cross', [(3, 1), (2, 2)])
def test_scanned_parameters_are_stacks_with_a_leading_layers_axis(tiny_data, layers, cross):
    config = tiny_config()
    config.model.update(num_layers=layers, num_cross_layers=cross, scan_layers=True)
    model = SemVLP(config.model, tiny_data.dims, rngs=nnx.Rngs(params=0))
    hidden = config.model.hidden_size
    stacks = model.encoder.stacks
    assert [stack.self_attention.query.kernel.shape for stack in stacks] == [
        (size, hidden, hidden) for size in ((layers - cross, cross) if layers > cross else (cross,))
    ]
    # Only the top stack has cross-attention; each layer of a stack starts from its own draw.
    assert [stack.cross_attention is not None for stack in stacks] == [False] * (
        len(stacks) - 1
    ) + [True]
    top = stacks[-1].self_attention.query.kernel[...]
    if cross > 1:
        assert not np.allclose(top[0], top[1])
    specs = nnx.to_pure_dict(nnx.get_partition_spec(nnx.state(model, nnx.Param)))
    assert specs['encoder']['stacks'][0]['feed_forward']['expand']['kernel'] == P(
        'layers', 'embed', 'mlp'
    )


@pytest.mark.parametrize('mode', ['single', 'two'])
@pytest.mark.parametrize('layers, cross, remat', [(3, 1, 'none'), (2, 2, 'none'), (3, 2, 'full')])
def test_scanned_encoder_computes_the_unrolled_function(
    tiny_data, tiny_batch, mode, layers, cross, remat
):
    unrolled, scanned, model_config = model_pair(
        tiny_data, num_layers=layers, num_cross_layers=cross, remat=remat
    )

    def outputs_and_grads(model):
        graphdef, params = nnx.split(model, nnx.Param)

        def loss(p):
            encoded = nnx.merge(graphdef, p)(tiny_batch, mode=mode)
            value = jnp.mean(encoded.pooled**2) + jnp.mean(encoded.image**2)
            return value, dataclasses.asdict(encoded)

        (_, encoded), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
        return encoded, nnx.to_pure_dict(grads)

    (want, want_grads), (got, got_grads) = outputs_and_grads(unrolled), outputs_and_grads(scanned)
    assert len(got['text_layers']) == len(want['text_layers']) == layers
    # Final, pooled and per-layer states of both modalities.
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5), got, want)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
        got_grads,
        scanned_like(want_grads, model_config),
    )


def test_each_scanned_layer_draws_its_own_dropout_randomness(tiny_data):
    """A stack splits the dropout stream per layer; a shared key would repeat one mask L times."""
    _, scanned, _ = model_pair(tiny_data, num_layers=3, num_cross_layers=3, dropout_rate=0.5)

    def step(layer, carry, rngs):
        return carry + jax.random.uniform(rngs.dropout(), carry.shape)

    _, after = scanned.encoder._run(step, jnp.zeros(4), nnx.Rngs(dropout=0))
    draws = np.diff(np.stack([np.zeros(4)] + [np.asarray(x) for x in after]), axis=0)
    assert draws.shape == (3, 4)
    assert len({tuple(d) for d in draws.round(6)}) == 3, draws


def test_scanned_training_under_fsdp_matches_unrolled(tiny_data, tiny_batch):
    """Same losses and updated parameters, including the cross-attention's mode-aware updates."""
    mesh = mesh_lib.make_mesh({'data': 2, 'fsdp': 4, 'tensor': 1})
    batch = jax.device_put(tiny_batch, sharding.batch_sharding(mesh))

    def run(scan_layers: bool, params=None):
        config = tiny_config()
        config.parallel.preset = 'fsdp'
        config.model.scan_layers = scan_layers
        model, state = train.create_model_and_state(config, tiny_data.dims, mesh)
        if params is not None:
            state = jax.device_put(
                state.replace(params=params, opt_state=model.optimizer.init(params)),
                model.state_shardings,
            )
        step = train.jit_train_step(config, model, mesh)
        losses = []
        for mode in ('single', 'two', 'two'):
            state, metrics = step(state, batch, step_mode=mode)
            losses.append(float(metrics[f'{mode}/loss']))
        return losses, state, config.model

    want_losses, want_state, model_config = run(scan_layers=False)
    start = train.create_model_and_state(tiny_config(), tiny_data.dims, mesh)[1].params
    got_losses, got_state, _ = run(True, scanned_like(jax.device_get(start), model_config))

    np.testing.assert_allclose(got_losses, want_losses, rtol=2e-5)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=5e-5),
        jax.device_get(got_state.params),
        scanned_like(jax.device_get(want_state.params), model_config),
    )
    kernel = got_state.params['encoder']['stacks'][0]['feed_forward']['expand']['kernel']
    assert kernel.sharding.spec == P(None, 'fsdp', None)


@pytest.mark.parametrize('mode', ['single', 'two'])
def test_alignment_diagnostics_read_the_scanned_layers_as_the_unrolled_ones(
    tiny_data, tiny_batch, mode
):
    unrolled, scanned, _ = model_pair(tiny_data)
    expected = diagnostics.alignment(unrolled, tiny_batch, mode)
    got = diagnostics.alignment(scanned, tiny_batch, mode)
    assert sorted(got) == sorted(expected)
    for key, value in expected.items():
        np.testing.assert_allclose(got[key], value, rtol=1e-4, atol=1e-6, err_msg=key)
