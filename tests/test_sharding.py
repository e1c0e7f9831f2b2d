"""Mesh construction, logical-axis rules, and training that is the same on every mesh."""

import json
import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from semvlp_jax import train
from semvlp_jax.parallel import mesh as mesh_lib
from semvlp_jax.parallel import sharding
from tests.conftest import tiny_config

GOLDEN = pathlib.Path(__file__).parent / 'golden' / 'fsdp_param_specs.json'


def test_mesh_shape_fills_the_free_axis():
    assert mesh_lib.mesh_shape({'data': -1, 'fsdp': 1, 'tensor': 1}, 8) == (8, 1, 1)
    assert mesh_lib.mesh_shape({'data': 2, 'fsdp': -1, 'tensor': 2}, 8) == (2, 2, 2)
    assert mesh_lib.mesh_shape({'data': 2, 'fsdp': 4}, 8) == (2, 4, 1)


@pytest.mark.parametrize(
    'axes, message',
    [
        ({'data': 3, 'fsdp': -1}, 'do not divide'),
        ({'data': 2, 'fsdp': 2}, 'needs 4 devices'),
        ({'data': -1, 'fsdp': -1}, 'at most one axis'),
        ({'data': 0}, r'config\.mesh\.data=0'),
        ({'model': 8}, r'config\.mesh\.model'),
    ],
)
def test_impossible_meshes_are_refused(axes, message):
    with pytest.raises(ValueError, match=message):
        mesh_lib.mesh_shape(axes, 8)


def test_logical_rules():
    rules = sharding.PRESETS['fsdp_tensor']
    assert sharding.logical_to_mesh(('embed', 'mlp'), rules) == P('fsdp', 'tensor')
    assert sharding.logical_to_mesh(('heads', 'embed'), rules) == P('tensor', 'fsdp')
    assert sharding.logical_to_mesh(('vocab', 'embed'), rules) == P(None, 'fsdp')
    assert sharding.logical_to_mesh(('embed', 'embed'), rules) == P('fsdp', None)
    assert sharding.logical_to_mesh(('norm',), rules) == P(None)
    assert sharding.logical_to_mesh(('embed', 'mlp'), sharding.PRESETS['data_parallel']) == P(
        None, None
    )
    with pytest.raises(ValueError, match='config.parallel.preset'):
        sharding.rules_from_config({'preset': 'zero3'})


def sharded_run(tiny_data, batch, axes, preset, mode, steps=2):
    config = tiny_config()
    config.parallel.preset = preset
    devices = jax.devices()[: int(np.prod([v for v in axes.values()]))]
    mesh = mesh_lib.make_mesh(axes, devices=devices)
    model, state = train.create_model_and_state(config, tiny_data.dims, mesh)
    step = train.jit_train_step(config, model, mesh)
    batch = jax.device_put(batch, sharding.batch_sharding(mesh))
    losses = []
    for _ in range(steps):
        state, metrics = step(state, batch, step_mode=mode)
        losses.append(float(metrics[f'{mode}/loss']))
    return losses, jax.device_get(state.params), state


@pytest.mark.parametrize('mode', ['single', 'two'])
def test_every_mesh_trains_like_one_device(tiny_data, tiny_batch, mode):
    reference_losses, reference_params, _ = sharded_run(
        tiny_data, tiny_batch, {'data': 1}, 'data_parallel', mode
    )
    for axes, preset in [
        ({'data': 8, 'fsdp': 1, 'tensor': 1}, 'data_parallel'),
        ({'data': 2, 'fsdp': 4, 'tensor': 1}, 'fsdp'),
        ({'data': 2, 'fsdp': 2, 'tensor': 2}, 'fsdp_tensor'),
    ]:
        losses, params, state = sharded_run(tiny_data, tiny_batch, axes, preset, mode)
        np.testing.assert_allclose(losses, reference_losses, rtol=2e-5, err_msg=f'{axes} {preset}')
        # Adam divides by the gradient's magnitude, so for near-zero gradients a different
        # reduction order moves the update by a visible fraction of lr (3e-3); 5e-5 is 1.7%.
        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=5e-5),
            params,
            reference_params,
        )
        if preset != 'data_parallel':
            kernel = state.params['encoder']['layers'][0]['feed_forward']['expand']['kernel']
            assert kernel.sharding.spec == sharding.logical_to_mesh(
                ('embed', 'mlp'), sharding.PRESETS[preset]
            )


def per_device_bytes(tree):
    totals = {}
    for leaf in jax.tree.leaves(tree):
        for shard in leaf.addressable_shards:
            totals[shard.device] = totals.get(shard.device, 0) + shard.data.nbytes
    return totals


def test_fsdp_splits_parameters_and_optimizer_state_over_devices(tiny_data):
    config = tiny_config()
    config.model.update(hidden_size=128, num_heads=4, mlp_size=512)
    config.parallel.preset = 'fsdp'
    mesh = mesh_lib.make_mesh({'data': 1, 'fsdp': 8, 'tensor': 1})
    _, state = train.create_model_and_state(config, tiny_data.dims, mesh)
    total = sum(leaf.nbytes for leaf in jax.tree.leaves((state.params, state.opt_state)))
    per_device = per_device_bytes((state.params, state.opt_state))
    assert len(per_device) == 8
    for device_bytes in per_device.values():
        # LayerNorm vectors, biases of split-free axes and small heads stay replicated.
        assert device_bytes / total < 1 / 8 * 1.25, device_bytes / total


def fsdp_param_specs(tiny_data):
    config = tiny_config()
    config.parallel.preset = 'fsdp'
    mesh = mesh_lib.make_mesh({'data': 2, 'fsdp': 4, 'tensor': 1})
    model, _ = train.create_model_and_state(config, tiny_data.dims, mesh)
    flat = jax.tree_util.tree_leaves_with_path(
        model.state_shardings.params, is_leaf=lambda x: isinstance(x, jax.sharding.NamedSharding)
    )
    return {jax.tree_util.keystr(path): str(s.spec) for path, s in flat}


def test_fsdp_parameter_shardings_match_the_golden_snapshot(tiny_data):
    specs = fsdp_param_specs(tiny_data)
    if os.environ.get('UPDATE_GOLDEN'):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps(specs, indent=1, sort_keys=True) + '\n')
    assert specs == json.loads(GOLDEN.read_text()), (
        'parameter shardings changed; if intended, rerun with UPDATE_GOLDEN=1 and review the diff'
    )


def test_indivisible_dimension_names_the_parameter(tiny_data):
    config = tiny_config()
    config.model.update(hidden_size=36, num_heads=2, mlp_size=72)  # 36 does not split 8 ways
    config.parallel.preset = 'fsdp'
    mesh = mesh_lib.make_mesh({'data': 1, 'fsdp': 8})
    with pytest.raises(
        ValueError, match=r"parameter .*kernel.*does not split over mesh axis 'fsdp'"
    ):
        train.create_model_and_state(config, tiny_data.dims, mesh)


def test_train_state_is_created_sharded_not_gathered(tiny_data):
    config = tiny_config()
    config.parallel.preset = 'fsdp'
    mesh = mesh_lib.make_mesh({'data': 1, 'fsdp': 8})
    _, state = train.create_model_and_state(config, tiny_data.dims, mesh)
    word = state.params['text_embeddings']['word']['embedding']
    assert word.sharding.spec == P(None, 'fsdp')
    assert {s.data.shape for s in word.addressable_shards} == {(word.shape[0], word.shape[1] // 8)}
    assert isinstance(state.step, jax.Array) and state.step.sharding.is_fully_replicated
    assert jnp.issubdtype(state.rng.dtype, jax.dtypes.prng_key)
