"""SIMLA's parts on their own: the EMA update, the alpha ramp, feature queues, momentum
contrastive distillation, sampled hard negatives, keyword pseudo-labels, visual tokenizers."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from semvlp_jax.simla import distillation, keywords, momentum, negatives, queues
from semvlp_jax.simla.visual_tokenizer import PixelRegression, RandomProjectionQuantizer


def test_the_ema_update_is_the_formula():
    rng = np.random.default_rng(0)
    teacher = {'a': rng.normal(size=(3, 4)).astype(np.float32), 'b': {'c': np.float32([1, -2])}}
    params = {'a': rng.normal(size=(3, 4)).astype(np.float32), 'b': {'c': np.float32([3, 5])}}
    m = np.float32(0.995)
    updated = jax.jit(momentum.ema_update)(teacher, params, 0.995)
    expected = jax.tree.map(lambda t, p: m * t + (np.float32(1) - m) * p, teacher, params)
    for got, want in zip(jax.tree.leaves(updated), jax.tree.leaves(expected)):
        np.testing.assert_allclose(got, want, rtol=1e-7, atol=0)
    np.testing.assert_allclose(updated['b']['c'], [1.01, -1.965], rtol=1e-6)  # by hand
    same = momentum.ema_update(teacher, params, 1.0)
    np.testing.assert_array_equal(same['a'], teacher['a'])
    np.testing.assert_array_equal(momentum.ema_update(teacher, params, 0.0)['a'], params['a'])
    # A bfloat16 teacher keeps its dtype, and the update is computed in float32.
    low = momentum.ema_update({'w': jnp.ones(2, jnp.bfloat16)}, {'w': jnp.full(2, 3.0)}, 0.5)
    assert low['w'].dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(low['w'], np.float32), [2.0, 2.0])


def test_alpha_ramps_linearly_then_holds():
    values = [float(momentum.distillation_alpha(s, 0.4, 100)) for s in (0, 25, 100, 1000)]
    np.testing.assert_allclose(values, [0.0, 0.1, 0.4, 0.4], rtol=1e-6)
    assert float(momentum.distillation_alpha(0, 0.4, 0)) == pytest.approx(0.4)


def test_queues_fill_oldest_first_and_wrap_around():
    q = queues.FeatureQueues.empty(size=6, dim=2)
    assert not q.valid.any() and int(q.pointer) == 0
    enqueue = jax.jit(queues.FeatureQueues.enqueue)
    for step in range(4):
        features = jnp.full((2, 2), float(step + 1))
        q = enqueue(q, features, -features, jnp.array([10 * step, 10 * step + 1]))
        assert int(q.pointer) == (2 * (step + 1)) % 6
    # Step 4 (the 4th batch) overwrote slots 0-1; slots 2-5 hold steps 2 and 3.
    np.testing.assert_array_equal(q.image[:, 0], [4, 4, 2, 2, 3, 3])
    np.testing.assert_array_equal(q.text[:, 0], [-4, -4, -2, -2, -3, -3])
    np.testing.assert_array_equal(q.image_key, [30, 31, 10, 11, 20, 21])
    assert q.valid.all()
    with pytest.raises(ValueError, match='queue size 6 does not divide by the batch 4'):
        q.enqueue(jnp.zeros((4, 2)), jnp.zeros((4, 2)), jnp.zeros(4, jnp.int32))
    assert queues.check_size(65536, 512, 'config.simla.queue_size') is None
    assert 'must divide by the global batch 48' in queues.check_size(
        1000, 48, 'config.simla.queue_size'
    )


def _unit(x):
    return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


def test_momentum_contrastive_with_alpha_zero_is_the_hard_loss():
    keys = jax.random.split(jax.random.key(0), 5)
    image, text, t_image, t_text = (_unit(jax.random.normal(k, (4, 8))) for k in keys[:4])
    image_key = jnp.array([0, 1, 1, 2])  # rows 1 and 2 show one image
    q = queues.FeatureQueues.empty(8, 8)
    q = q.enqueue(_unit(jax.random.normal(keys[4], (4, 8))), t_text[::-1], jnp.array([7, 8, 1, 9]))
    temperature = jnp.float32(0.07)
    loss, accuracy = distillation.momentum_contrastive(
        image, text, t_image, t_text, image_key, q, temperature, alpha=0.0
    )
    # By hand: columns = the batch's teacher features then the queue (4 written, 4 empty).
    bank_text = jnp.concatenate([t_text, q.text])
    bank_image = jnp.concatenate([t_image, q.image])
    bank_key = np.concatenate([image_key, q.image_key])
    valid = np.concatenate([np.ones(4, bool), np.asarray(q.valid)])
    mask = np.zeros((4, 12))
    for i in range(4):
        for j in range(12):
            if not valid[j] or (j != i and bank_key[j] == image_key[i]):
                mask[i, j] = -1e9
    labels = jnp.arange(4)
    i2t = optax.softmax_cross_entropy_with_integer_labels(image @ bank_text.T / 0.07 + mask, labels)
    t2i_logits = text @ bank_image.T / 0.07 + mask
    t2i = optax.softmax_cross_entropy_with_integer_labels(t2i_logits, labels)
    np.testing.assert_allclose(loss, (i2t + t2i) / 2, rtol=1e-5)
    np.testing.assert_array_equal(accuracy, np.argmax(t2i_logits, -1) == np.arange(4))
    # The queue's copy of image 1 (queue slot 2, bank column 6) is excluded for rows 1 and 2 only.
    assert mask[1, 6] == mask[2, 6] == -1e9 and mask[0, 6] == 0
    # alpha > 0 moves the loss.
    mixed, _ = distillation.momentum_contrastive(
        image, text, t_image, t_text, image_key, q, temperature, alpha=0.4
    )
    assert not np.allclose(mixed, loss)


def test_soft_targets_mix_the_teacher_in():
    hard = jnp.array([[0.0, 1.0, 0.0]])
    teacher = jnp.log(jnp.array([[0.5, 0.25, 0.25]]))
    np.testing.assert_allclose(
        distillation.mixed_targets(hard, teacher, 0.4), [[0.2, 0.7, 0.1]], rtol=1e-6
    )
    np.testing.assert_allclose(
        distillation.soft_cross_entropy(teacher, hard), [np.log(4.0)], rtol=1e-6
    )
    np.testing.assert_allclose(
        distillation.clamp_temperature(jnp.array([1e-5, 0.07, 2.0])), [0.001, 0.07, 0.5]
    )


def test_hard_negatives_are_never_the_positive_nor_the_same_image():
    sample = jax.jit(negatives.sample_hard_negatives)
    rng = np.random.default_rng(0)
    size = 6  # one compile; the keys vary, with duplicates, down to a batch of one image
    for trial in range(40):
        image_key = jnp.asarray(rng.integers(0, 1 + trial % 4, size))
        similarity = jnp.asarray(rng.normal(scale=5.0, size=(size, size)), jnp.float32)
        drawn = sample(similarity, image_key, jax.random.key(trial))
        keys = np.asarray(image_key)
        for i in range(size):
            others = (keys != keys[i]).any()
            assert bool(drawn.has_negative[i]) == others
            if others:
                assert keys[int(drawn.image_for_text[i])] != keys[i]
                assert keys[int(drawn.text_for_image[i])] != keys[i]
            else:
                assert int(drawn.image_for_text[i]) == int(drawn.text_for_image[i]) == i
    # The draw follows the softmax: a dominant allowed similarity is (almost surely) chosen.
    similarity = jnp.array([[0.0, 0.0, 50.0], [0.0, 0.0, 0.0], [50.0, 0.0, 0.0]])
    drawn = sample(similarity, jnp.array([0, 1, 2]), jax.random.key(0))
    assert int(drawn.image_for_text[0]) == 2 and int(drawn.text_for_image[0]) == 2


def test_keywords_from_a_hand_built_attention_tensor():
    CLS, SEP, PAD = 1, 2, 0
    # positions:  0    1   2   3   4   5   6   7    8    9
    ids = jnp.array([[CLS, 10, 11, 12, 13, 14, 15, SEP, PAD, PAD]])
    eligible = keywords.word_positions(ids != PAD)
    np.testing.assert_array_equal(eligible, ~jnp.isin(ids, jnp.array([CLS, SEP, PAD])))
    attention = jnp.array(
        [
            [
                # Head 0 attends most to [CLS] and [SEP] (never keywords), then to 4 and 3.
                [0.9, 0.01, 0.02, 0.4, 0.5, 0.03, 0.04, 0.8, 0.0, 0.0],
                # Head 1: 3, then [PAD] (never), then 2.
                [0.0, 0.01, 0.3, 0.5, 0.02, 0.03, 0.04, 0.0, 0.4, 0.0],
                # Head 2: 6, then 3.
                [0.0, 0.01, 0.02, 0.3, 0.04, 0.05, 0.6, 0.0, 0.0, 0.0],
            ]
        ]
    )
    # Two votes per head: 3 gets three, 2, 4 and 6 one each, 1 and 5 none.
    positions, chosen = keywords.keyword_positions(attention, eligible, per_head=2, count=5)
    np.testing.assert_array_equal(positions[0, :4], [3, 2, 4, 6])  # ties: earlier first
    np.testing.assert_array_equal(chosen[0], [True, True, True, True, False])
    targets = keywords.keyword_targets(attention, ids, eligible, 16, per_head=2, count=5)
    np.testing.assert_array_equal(np.flatnonzero(targets[0]), [11, 12, 13, 15])
    top3 = keywords.keyword_targets(attention, ids, eligible, 16, per_head=2, count=3)
    np.testing.assert_array_equal(np.flatnonzero(top3[0]), [11, 12, 13])
    # One vote per head (4, 3, 6): a three-way tie, won by the earliest position.
    top1 = keywords.keyword_targets(attention, ids, eligible, 16, per_head=1, count=1)
    np.testing.assert_array_equal(np.flatnonzero(top1[0]), [12])


def test_the_quantizer_is_a_fixed_function_of_the_pixels():
    pixels = jax.random.normal(jax.random.key(0), (2, 16, 16, 3))
    quantizer = RandomProjectionQuantizer(patch_size=8, codes=64, dim=8, seed=3)
    codes = quantizer.targets(pixels)
    assert codes.shape == (2, 4) and codes.dtype == jnp.int32
    assert int(codes.min()) >= 0 and int(codes.max()) < 64
    np.testing.assert_array_equal(
        codes, RandomProjectionQuantizer(8, 64, 8, seed=3).targets(pixels)
    )
    many = jax.random.normal(jax.random.key(1), (8, 32, 32, 3))
    other_seed = RandomProjectionQuantizer(8, 64, 8, seed=4)
    assert not np.array_equal(quantizer.targets(many), other_seed.targets(many))
    # Each patch is normalised first: brightness and contrast do not change its code.
    np.testing.assert_array_equal(quantizer.targets(2.0 * pixels + 0.5), codes)
    regression = PixelRegression(patch_size=8).targets(pixels)
    assert regression.shape == (2, 4, 192)
    np.testing.assert_allclose(regression.mean(-1), 0, atol=1e-5)
    np.testing.assert_allclose(regression.std(-1), 1, atol=1e-3)
