"""The pure train step: ITM pairing, untouched unused parameters, and learning in every mode."""

import functools
import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from semvlp_jax import objectives, train
from semvlp_jax.models.semvlp import SemVLP
from semvlp_jax.objectives.losses import Ratio
from semvlp_jax.objectives.registry import OBJECTIVES, Objective
from semvlp_jax.optimizer import parameter_groups
from semvlp_jax.parallel.mesh import make_mesh
from semvlp_jax.train_step import FIELDS_SWAPPED_WITH_THE_IMAGE, make_itm_pairs, train_step
from tests.conftest import tiny_config


def jitted_step(config, graphdef, optimizer, microbatches=1):
    """The train step without donation, so fixtures' states can be reused."""
    return jax.jit(
        functools.partial(
            train_step,
            graphdef=graphdef,
            optimizer=optimizer,
            objectives=config.objectives.to_dict(),
            itm_negative_prob=config.itm_negative_prob,
            microbatches=microbatches,
        ),
        static_argnames='step_mode',
    )


def test_itm_pairs_swap_half_the_images_for_another_example_of_the_batch():
    size = 64
    batch = {
        'text_ids': jnp.arange(size)[:, None] * jnp.ones((1, 3), jnp.int32),
        'region_features': jnp.arange(size, dtype=jnp.float32)[:, None, None] * jnp.ones((1, 2, 4)),
        'mop_weights': jnp.arange(size, dtype=jnp.float32)[:, None],
    }
    swapped_total = 0
    for seed in range(20):
        paired = make_itm_pairs(batch, jax.random.key(seed), negative_prob=0.5)
        owner = np.asarray(paired['region_features'][:, 0, 0]).astype(int)
        matched = np.asarray(paired['is_matched']).astype(bool)
        np.testing.assert_array_equal(owner[matched], np.arange(size)[matched])
        assert (owner[~matched] != np.arange(size)[~matched]).all(), 'a negative kept its own image'
        # Every image field moves together with the image; text stays.
        np.testing.assert_array_equal(np.asarray(paired['mop_weights'][:, 0]).astype(int), owner)
        np.testing.assert_array_equal(paired['text_ids'], batch['text_ids'])
        swapped_total += (~matched).sum()
    assert abs(swapped_total / (20 * size) - 0.5) < 0.05
    assert set(FIELDS_SWAPPED_WITH_THE_IMAGE) >= {'region_features', 'mop_weights'}


def test_itm_negatives_are_spread_over_the_batch():
    size = 16
    batch = {
        'text_ids': jnp.zeros((size, 2), jnp.int32),
        'region_features': jnp.arange(size, dtype=jnp.float32)[:, None, None],
    }
    partners = set()
    for seed in range(50):
        paired = make_itm_pairs(batch, jax.random.key(seed), negative_prob=1.0)
        owner = np.asarray(paired['region_features'][0, 0, 0]).astype(int)
        partners.add(int(owner))
    assert partners == set(range(1, size))


@pytest.fixture(scope='module')
def setup(tiny_data):
    config = tiny_config()
    one_device = make_mesh({'data': 1}, devices=jax.devices()[:1])
    model, state = train.create_model_and_state(config, tiny_data.dims, one_device)
    return types.SimpleNamespace(config=config, model=model, mesh=one_device, state=state)


def unpack(setup):
    return setup.config, setup.model.graphdef, setup.model.optimizer, setup.state


def leaves_by_group(tree, groups, group):
    return [x for g, x in zip(jax.tree.leaves(groups), jax.tree.leaves(tree)) if g == group]


def test_single_stream_step_leaves_cross_attention_and_its_adam_state_bit_identical(
    setup, tiny_batch
):
    config, graphdef, optimizer, state = unpack(setup)
    groups = optimizer.groups
    assert set(jax.tree.leaves(groups)) == {'single+two', 'two'}
    step = jitted_step(config, graphdef, optimizer)
    before = jax.device_get(state)

    after, _ = step(state, tiny_batch, step_mode='single')
    after = jax.device_get(after)
    cross_before = leaves_by_group(before.params, groups, 'two')
    cross_after = leaves_by_group(after.params, groups, 'two')
    for a, b in zip(cross_before, cross_after):
        np.testing.assert_array_equal(a, b)
    inner_before = optimizer.group_states(before.opt_state)['two']
    inner_after = optimizer.group_states(after.opt_state)['two']
    for a, b in zip(jax.tree.leaves(inner_before), jax.tree.leaves(inner_after)):
        np.testing.assert_array_equal(a, b)  # moments and step count
    # The shared weights did move, and their Adam count advanced.
    shared_changed = [
        not np.array_equal(a, b)
        for a, b in zip(
            leaves_by_group(before.params, groups, 'single+two'),
            leaves_by_group(after.params, groups, 'single+two'),
        )
    ]
    assert all(shared_changed)
    assert optimizer.group_states(after.opt_state)['single+two'].inner_state[0].count == 1

    # A two-stream step then updates the cross-attention parameters for the first time.
    after_two, _ = step(jax.device_put(after), tiny_batch, step_mode='two')
    after_two = jax.device_get(after_two)
    assert all(
        not np.array_equal(a, b)
        for a, b in zip(cross_after, leaves_by_group(after_two.params, groups, 'two'))
    )
    assert optimizer.group_states(after_two.opt_state)['two'].inner_state[0].count == 1
    assert int(after_two.step) == 2


def test_heads_of_objectives_missing_from_a_mode_are_grouped_with_that_mode(setup, tiny_data):
    config = setup.config
    model = nnx.eval_shape(lambda: SemVLP(config.model, tiny_data.dims, rngs=nnx.Rngs(params=0)))
    objectives = {'single': {'mlm': 1.0}, 'two': {'mlm': 1.0, 'itm': 1.0}}
    groups = parameter_groups(model, objectives)
    assert set(jax.tree.leaves(groups['matching_head'])) == {'two'}
    assert set(jax.tree.leaves(groups['mlm_head'])) == {'single+two'}
    assert set(jax.tree.leaves(groups['answer_head'])) == {'unused'}


def test_overfits_a_fixed_tiny_batch(tiny_data, tiny_batch):
    # Step mode 'both' (the single- and two-stream losses summed, one program): each mode's
    # loss must fall and its MLM must fit the batch. No ITM negatives: every step then sees
    # exactly the same inputs (a fresh random pairing per step would hide a different half of
    # the masked words from MLM each time).
    config = tiny_config()
    config.update(itm_negative_prob=0.0, total_steps=60)
    one_device = make_mesh({'data': 1}, devices=jax.devices()[:1])
    model, state = train.create_model_and_state(config, tiny_data.dims, one_device)
    step = jitted_step(config, model.graphdef, model.optimizer)
    losses = {'single': [], 'two': []}
    for _ in range(config.total_steps):
        state, metrics = step(state, tiny_batch, step_mode='both')
        for mode, history in losses.items():
            history.append(float(metrics[f'{mode}/loss']))
    for mode, history in losses.items():
        assert np.isfinite(history).all()
        assert np.mean(history[-5:]) < 0.5 * np.mean(history[:3]), (mode, history)
        assert float(metrics[f'{mode}/mlm_accuracy']) > 0.8, mode


def test_itm_scores_captions_only_and_qa_matched_questions_only(setup, tiny_batch):
    _, graphdef, _, state = unpack(setup)
    model = nnx.merge(graphdef, state.params)
    encoded = model(tiny_batch, mode='single')
    size = tiny_batch['text_ids'].shape[0]
    half = np.arange(size) < size // 2

    def objective_loss(name, is_question, is_matched):
        batch = dict(
            tiny_batch,
            is_question=is_question.astype(np.int32),
            is_matched=is_matched.astype(np.int32),
        )
        terms, _ = objectives.get(name).fn(model, encoded, batch)
        return float(sum(term.value for term in terms))

    everything = objective_loss('itm', np.zeros(size), half)
    assert everything > 0
    assert objective_loss('itm', np.ones(size), half) == 0.0  # all questions: no ITM signal
    # QA: questions on their own image count; mismatched ones and captions do not.
    assert objective_loss('qa', np.ones(size), np.zeros(size)) == 0.0
    assert objective_loss('qa', np.zeros(size), np.ones(size)) == 0.0
    assert objective_loss('qa', np.ones(size), np.ones(size)) > 0


def test_alternating_modes_compile_one_program_per_mode(setup, tiny_batch):
    step = train.jit_train_step(setup.config, setup.model, setup.mesh)
    state = jax.tree.map(jnp.copy, setup.state)  # the step donates its input
    for mode in ['single', 'two', 'single', 'two', 'single']:
        state, _ = step(state, tiny_batch, step_mode=mode)
    assert step._cache_size() == 2


def test_each_microbatch_draws_with_a_key_of_its_own(setup, tiny_data, monkeypatch):
    # A probe objective records the key it is given for its own draws (hard negatives, grounding
    # picks): microbatches reusing one key would draw the same picks for different examples.
    seen = []

    def probe(model, encoded, batch):
        key_data = jax.random.key_data(encoded.sample_key)
        jax.debug.callback(lambda k: seen.append(bytes(np.asarray(k))), key_data)
        return (Ratio(jnp.zeros(()), jnp.ones(())),), {}

    monkeypatch.setitem(OBJECTIVES, 'probe', Objective('probe', probe, heads=()))
    config, graphdef, optimizer, state = unpack(setup)
    config = ml_collections.ConfigDict(config.to_dict())
    config.objectives = {'single': {'probe': 1.0}}
    batch = jax.tree.map(lambda *x: np.concatenate(x), *tiny_data.val[:2])  # 16 examples
    for microbatches in (1, 4):
        jitted_step(config, graphdef, optimizer, microbatches)(state, batch, step_mode='single')
    jax.effects_barrier()
    whole, accumulated = seen[0], seen[1:]
    assert len(accumulated) >= 4, 'the probe did not run once per microbatch'
    assert len(set(accumulated[-4:])) == 4, 'microbatches shared a sample key'
    assert whole not in accumulated[-4:]


def test_four_microbatches_equal_one_step_on_the_whole_batch(setup, tiny_data):
    # Step mode 'both': every objective of both modes in one program (accumulation does not
    # depend on the mode).
    mode = 'both'
    config, graphdef, optimizer, state = unpack(setup)
    # Every objective but ITC is a mean over examples; ITC's negatives are the rest of its
    # (micro)batch, so it cannot be split exactly and is left out here.
    config = ml_collections.ConfigDict(config.to_dict())
    config.objectives = {
        mode: {name: w for name, w in weights.items() if name != 'itc'}
        for mode, weights in config.objectives.items()
    }
    batch = jax.tree.map(lambda *x: np.concatenate(x), *tiny_data.val[:2])  # 16 examples

    def step(microbatches):
        fn = jitted_step(config, graphdef, optimizer, microbatches)
        return jax.device_get(fn(state, batch, step_mode=mode))

    (whole, whole_metrics), (accumulated, accumulated_metrics) = step(1), step(4)
    assert whole_metrics.keys() == accumulated_metrics.keys()
    for key in whole_metrics:
        np.testing.assert_allclose(
            accumulated_metrics[key], whole_metrics[key], rtol=1e-5, atol=1e-6, err_msg=key
        )
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=5e-5),
        accumulated.params,
        whole.params,
    )
