"""The shared encoder's two modes: what each reads, padding, cross-attention layout."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from semvlp_jax.models.semvlp import SemVLP
from tests.conftest import tiny_config


def make_model(tiny_data, extra_text_len=0, **model_overrides):
    config = tiny_config()
    config.model.update(**model_overrides)
    dims = dataclasses.replace(
        tiny_data.dims, max_text_len=tiny_data.dims.max_text_len + extra_text_len
    )
    return SemVLP(config.model, dims, rngs=nnx.Rngs(params=0)), config


def cross_attention_leaves(model):
    params = nnx.state(model, nnx.Param)
    return [
        (path, leaf)
        for path, leaf in jax.tree_util.tree_leaves_with_path(params)
        if 'cross_attention' in jax.tree_util.keystr(path)
    ]


def test_cross_attention_only_in_top_k_layers(tiny_data):
    model, config = make_model(tiny_data, num_layers=4, num_cross_layers=2)
    has_cross = [layer.cross_attention is not None for layer in model.encoder.layers]
    assert has_cross == [False, False, True, True]


def test_shared_cross_attention_has_half_the_parameters_of_separate(tiny_data):
    shared, _ = make_model(tiny_data, share_cross_attention=True)
    separate, _ = make_model(tiny_data, share_cross_attention=False)

    def count(model):
        return sum(leaf.size for _, leaf in cross_attention_leaves(model))

    assert count(separate) == 2 * count(shared) > 0


def test_single_mode_output_is_independent_of_cross_attention(tiny_data, tiny_batch):
    model, _ = make_model(tiny_data)
    before = model(tiny_batch, mode='single')
    two_before = model(tiny_batch, mode='two')
    for layer in model.encoder.layers:
        if layer.cross_attention is not None:
            for _, param in nnx.iter_graph(layer.cross_attention):
                if isinstance(param, nnx.Param):
                    param[...] = param[...] + 1.0
    after = model(tiny_batch, mode='single')
    two_after = model(tiny_batch, mode='two')
    np.testing.assert_array_equal(before.text, after.text)
    np.testing.assert_array_equal(before.pooled, after.pooled)
    # The same perturbation does change the two-stream output, so it was a real perturbation.
    assert not np.allclose(two_before.text, two_after.text)


def test_two_mode_text_below_cross_layers_ignores_the_image(tiny_data, tiny_batch):
    model, config = make_model(tiny_data, num_layers=3, num_cross_layers=1)
    other_image = dict(tiny_batch)
    other_image['region_features'] = tiny_batch['region_features'][::-1] + 0.5
    other_image['region_boxes'] = tiny_batch['region_boxes'][::-1]
    first_cross = config.model.num_layers - config.model.num_cross_layers

    two_a, two_b = model(tiny_batch, mode='two'), model(other_image, mode='two')
    for layer in range(first_cross):
        np.testing.assert_array_equal(two_a.text_layers[layer], two_b.text_layers[layer])
    assert not np.allclose(two_a.text_layers[first_cross], two_b.text_layers[first_cross])

    single_a, single_b = model(tiny_batch, mode='single'), model(other_image, mode='single')
    assert not np.allclose(single_a.text_layers[0], single_b.text_layers[0])


def pad(batch, extra_tokens, extra_regions):
    """Appends padding tokens and padding regions (mask 0, random contents)."""
    rng = np.random.default_rng(0)
    padded = dict(batch)
    size = batch['text_ids'].shape[0]
    padded['text_ids'] = np.concatenate(
        [batch['text_ids'], rng.integers(5, 20, (size, extra_tokens))], 1
    ).astype(np.int32)
    padded['text_mask'] = np.concatenate(
        [batch['text_mask'], np.zeros((size, extra_tokens), np.int32)], 1
    )
    for field, fill in (('region_features', rng.normal), ('region_boxes', rng.random)):
        shape = batch[field].shape
        padded[field] = np.concatenate(
            [batch[field], fill(size=(shape[0], extra_regions, shape[2])).astype(np.float32)], 1
        )
    padded['region_mask'] = np.concatenate(
        [batch['region_mask'], np.zeros((size, extra_regions), np.int32)], 1
    )
    return padded


@pytest.mark.parametrize('mode', ['single', 'two'])
def test_padding_leaves_real_positions_unchanged(tiny_data, tiny_batch, mode):
    model, _ = make_model(tiny_data, extra_text_len=4)  # padded tokens need position embeddings
    text_len, num_regions = tiny_batch['text_ids'].shape[1], tiny_batch['region_mask'].shape[1]
    real_text = tiny_batch['text_mask'].astype(bool)
    real_regions = tiny_batch['region_mask'].astype(bool)

    plain = model(tiny_batch, mode=mode)
    padded = model(pad(tiny_batch, extra_tokens=4, extra_regions=3), mode=mode)
    np.testing.assert_allclose(
        padded.text[:, :text_len][real_text], plain.text[real_text], atol=1e-5, rtol=1e-5
    )
    np.testing.assert_allclose(
        padded.image[:, :num_regions][real_regions], plain.image[real_regions], atol=1e-5, rtol=1e-5
    )
    np.testing.assert_allclose(padded.pooled, plain.pooled, atol=1e-5, rtol=1e-5)
    # Sanity: the padded positions really were fed something different.
    assert padded.text.shape[1] == text_len + 4 and padded.image.shape[1] == num_regions + 3


def test_dropout_is_off_without_rngs_and_on_with_them(tiny_data, tiny_batch):
    model, _ = make_model(tiny_data, dropout_rate=0.5)
    a, b = model(tiny_batch, mode='two'), model(tiny_batch, mode='two')
    np.testing.assert_array_equal(a.text, b.text)
    c = model(tiny_batch, mode='two', rngs=nnx.Rngs(dropout=1))
    assert not np.allclose(a.text, c.text)


@pytest.mark.parametrize('mode', ['single', 'two'])
@pytest.mark.parametrize('remat', ['full', 'dots'])
def test_rematerialisation_changes_nothing_but_memory(tiny_data, tiny_batch, mode, remat):
    plain, _ = make_model(tiny_data, dropout_rate=0.2)
    rematted, _ = make_model(tiny_data, dropout_rate=0.2, remat=remat)

    def loss_and_grads(model):
        graphdef, params = nnx.split(model, nnx.Param)

        def loss(p):
            encoded = nnx.merge(graphdef, p)(tiny_batch, mode=mode, rngs=nnx.Rngs(dropout=3))
            return jnp.mean(encoded.text**2) + jnp.mean(encoded.image**2)

        return jax.jit(jax.value_and_grad(loss))(params)

    (loss_a, grads_a), (loss_b, grads_b) = loss_and_grads(plain), loss_and_grads(rematted)
    np.testing.assert_allclose(loss_a, loss_b, rtol=1e-6)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), grads_a, grads_b
    )
