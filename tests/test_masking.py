"""Masking statistics: 15% of eligible positions, 80/10/10, never special or padding tokens."""

import numpy as np

from semvlp_jax.data import masking

MASK_ID, PAD_ID, CLS_ID, SEP_ID = 4, 0, 2, 3
RANDOM_IDS = np.arange(5, 50)


def test_token_masking_statistics():
    rng = np.random.default_rng(0)
    text_len, real_len, trials = 30, 22, 4000
    ids = np.full(text_len, PAD_ID)
    ids[:real_len] = [CLS_ID, *rng.integers(5, 50, real_len - 2), SEP_ID]
    eligible = np.zeros(text_len, bool)
    eligible[1 : real_len - 1] = True

    chosen = masked = randomised = kept = 0
    for _ in range(trials):
        out = masking.mask_tokens(
            ids,
            eligible,
            rng,
            mask_id=MASK_ID,
            random_ids=RANDOM_IDS,
            prob=0.15,
            max_predictions=text_len,
        )
        positions = out.positions[out.weights > 0]
        assert eligible[positions].all(), 'masked a special or padding token'
        np.testing.assert_array_equal(out.targets[out.weights > 0], ids[positions])
        untouched = np.setdiff1d(np.arange(text_len), positions)
        np.testing.assert_array_equal(out.values[untouched], ids[untouched])
        chosen += len(positions)
        masked += np.sum(out.values[positions] == MASK_ID)
        kept += np.sum(out.values[positions] == ids[positions])
        randomised += np.sum(
            (out.values[positions] != MASK_ID) & (out.values[positions] != ids[positions])
        )

    assert abs(chosen / (trials * eligible.sum()) - 0.15) < 0.005
    # A random replacement can draw the original id (1/45 here), which then counts as kept.
    assert abs(masked / chosen - 0.8) < 0.01
    assert abs(randomised / chosen - 0.1 * 44 / 45) < 0.01
    assert abs(kept / chosen - (0.1 + 0.1 / 45)) < 0.01


def test_token_masking_respects_max_predictions():
    rng = np.random.default_rng(1)
    ids = np.arange(5, 45)
    out = masking.mask_tokens(
        ids,
        np.ones(40, bool),
        rng,
        mask_id=MASK_ID,
        random_ids=RANDOM_IDS,
        prob=0.9,
        max_predictions=4,
    )
    assert out.weights.sum() == 4
    assert np.sum(out.values != ids) <= 4


def test_region_masking_statistics():
    rng = np.random.default_rng(0)
    num_regions, real, dim, trials = 10, 7, 6, 4000
    region_mask = np.arange(num_regions) < real
    features = np.zeros((num_regions, dim), np.float32)
    features[:real] = rng.normal(size=(real, dim)) + 3.0  # nonzero, distinct per region

    chosen = zeroed = replaced = kept = 0
    for _ in range(trials):
        out = masking.mask_regions(
            features, region_mask, rng, prob=0.15, max_predictions=num_regions
        )
        positions = out.positions[out.weights > 0]
        assert region_mask[positions].all(), 'masked a padding region'
        np.testing.assert_array_equal(out.targets[out.weights > 0], features[positions])
        np.testing.assert_array_equal(out.targets[out.weights == 0], 0.0)
        for p in positions:
            row = out.values[p]
            if not row.any():
                zeroed += 1
            elif np.array_equal(row, features[p]):
                kept += 1
            else:
                # A replacement is another real region's feature.
                assert any(np.array_equal(row, features[q]) for q in range(real) if q != p)
                replaced += 1
        chosen += len(positions)

    assert abs(chosen / (trials * real) - 0.15) < 0.006
    assert abs(zeroed / chosen - 0.8) < 0.015
    assert abs(replaced / chosen - 0.1) < 0.015
    assert abs(kept / chosen - 0.1) < 0.015
