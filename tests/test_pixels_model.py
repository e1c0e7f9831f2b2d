"""Pixels in: the patch path of the model, block masking of patches, and training on pixels."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import demo_pixels
from semvlp_jax import train
from semvlp_jax.config_checks import validate
from semvlp_jax.data import masking, pipeline, synthetic
from semvlp_jax.errors import ConfigError
from semvlp_jax.models.semvlp import SemVLP, one_row_per_image
from semvlp_jax.models.vision import PatchEmbeddings, patchify
from semvlp_jax.parallel.mesh import make_mesh
from semvlp_jax.train_step import make_itm_pairs, train_step

IMAGE, PATCH = 32, 8  # a 4 x 4 grid


def pixel_config(tower_layers: int = 0):
    """The pixel demo shrunk like tests.conftest.tiny_config, at 32 x 32 pixels."""
    config = demo_pixels.get_config()
    config.update(total_steps=40, batch_size=8, eval_batches=1)
    config.model.update(
        num_layers=2,
        num_cross_layers=1,
        hidden_size=32,
        num_heads=2,
        mlp_size=64,
        image_size=IMAGE,
        patch_size=PATCH,
        vision_tower=dict(num_layers=tower_layers, width=24, num_heads=2, mlp_size=48),
    )
    config.optimizer.update(learning_rate=3e-3, warmup_steps=0)
    config.data.update(num_train=64, num_val=16)
    return config


@pytest.fixture(scope='module')
def pixel_data(tmp_path_factory):
    config = pixel_config()
    return pipeline.synthetic_pretraining(
        config.data,
        tmp_path_factory.mktemp('pixels'),
        batch_size=config.batch_size,
        seed=0,
        pixel_input=pipeline.PixelInput.of(config.model),
    )


def test_pixel_batches_are_the_rendered_scenes_normalised(pixel_data):
    batch = next(iter(pixel_data.val))
    assert batch['pixels'].shape == (8, IMAGE, IMAGE, 3) and batch['pixels'].dtype == np.float32
    assert not any(key.startswith(('region_', 'mop_')) for key in batch)
    config = pixel_config()
    scenes = synthetic.with_pixels(synthetic.SyntheticConfig.from_data(config.data), IMAGE)
    scene = synthetic.SyntheticScenes(scenes, 'val', 16)[0]
    rgb = batch['pixels'][0] * pipeline.pixels.CLIP_STD + pipeline.pixels.CLIP_MEAN
    np.testing.assert_allclose(rgb * 255, scene['pixels'], atol=1e-3)


def test_patchify_orders_patches_row_major_and_pixels_row_column_channel():
    pixels = jnp.arange(2 * 4 * 4 * 3, dtype=jnp.float32).reshape(2, 4, 4, 3)
    patches = patchify(pixels, 2)
    assert patches.shape == (2, 4, 12)
    # Patch 1 is the top-right 2 x 2 block; within it, rows, then columns, then channels.
    np.testing.assert_array_equal(patches[0, 1], pixels[0, 0:2, 2:4].reshape(-1))
    np.testing.assert_array_equal(patches[1, 2], pixels[1, 2:4, 0:2].reshape(-1))


def test_masked_patches_become_the_mask_token_plus_their_position():
    config = pixel_config(tower_layers=1)
    embeddings = PatchEmbeddings(config.model, rngs=nnx.Rngs(0))
    pixels = jax.random.normal(jax.random.key(1), (2, IMAGE, IMAGE, 3))
    mask = np.zeros((2, 16), bool)
    mask[0, [0, 5]] = mask[1, 15] = True
    masked = embeddings.tokens(pixels, jnp.asarray(mask), None)
    plain = embeddings.tokens(pixels, None, None)
    position = embeddings.position[...]
    for row, patch in [(0, 0), (0, 5), (1, 15)]:
        expected = embeddings.mask_token[...] + position[1 + patch]
        np.testing.assert_allclose(masked[row, 1 + patch], expected, rtol=1e-6)
        assert not np.allclose(plain[row, 1 + patch], expected)
    keep = np.concatenate([np.ones((2, 1), bool), ~mask], axis=1)
    np.testing.assert_array_equal(np.asarray(masked)[keep], np.asarray(plain)[keep])


def test_an_example_with_two_images_of_pixels_is_two_rows():
    batch = {
        'text_ids': jnp.arange(6).reshape(3, 2),
        'text_mask': jnp.ones((3, 2), jnp.int32),
        'pixels': jnp.arange(3 * 2 * 4 * 4 * 3, dtype=jnp.float32).reshape(3, 2, 4, 4, 3),
    }
    rows = one_row_per_image(batch)
    assert rows['pixels'].shape == (6, 4, 4, 3)
    np.testing.assert_array_equal(rows['pixels'][3], batch['pixels'][1, 1])
    np.testing.assert_array_equal(rows['text_ids'][3], batch['text_ids'][1])


def test_itm_negatives_carry_their_pixels(pixel_data):
    batch = jax.tree.map(jnp.asarray, pixel_data.val[0])
    paired = make_itm_pairs(batch, jax.random.key(0), 1.0)
    pixels, swapped = np.asarray(batch['pixels']), np.asarray(paired['pixels'])
    for i in range(8):
        sources = [j for j in range(8) if np.array_equal(swapped[i], pixels[j])]
        assert len(sources) == 1  # one of the batch's images, whole
        assert (sources[0] == i) == bool(paired['is_matched'][i])
    assert int(paired['is_matched'].sum()) < 8


def test_both_modes_learn_a_fixed_batch_of_pixels_through_a_vision_tower(pixel_data):
    # One tower layer of width 24 under an encoder of width 32: the tower, the projection and
    # the shared encoder all train (the tower-less path is the pixel demo's, run in benchmarks).
    config = pixel_config(tower_layers=1)
    config.update(itm_negative_prob=0.0)
    one_device = make_mesh({'data': 1}, devices=jax.devices()[:1])
    model, state = train.create_model_and_state(config, pixel_data.dims, one_device)
    step = jax.jit(
        functools.partial(
            train_step,
            graphdef=model.graphdef,
            optimizer=model.optimizer,
            objectives=config.objectives.to_dict(),
            itm_negative_prob=0.0,
        ),
        static_argnames='step_mode',
    )
    batch = pixel_data.val[0]
    # One program for both modes ('both' sums their losses): one compile instead of two.
    losses = {'single': [], 'two': []}
    for _ in range(25):
        state, metrics = step(state, batch, step_mode='both')
        for mode, history in losses.items():
            history.append(float(metrics[f'{mode}/loss']))
    for mode, history in losses.items():
        assert np.isfinite(history).all()
        assert np.mean(history[-3:]) < 0.5 * np.mean(history[:3]), (mode, history)

    # The image reaches the text: the pixels' tokens feed the pooled output in both modes.
    @functools.partial(jax.jit, static_argnames='mode')
    def pooled(params, batch, mode):
        return nnx.merge(model.graphdef, params)(batch, mode=mode).pooled

    other = dict(batch, pixels=np.roll(batch['pixels'], 1, axis=0))
    for mode in ('single', 'two'):
        own, swapped = pooled(state.params, batch, mode), pooled(state.params, other, mode)
        assert float(jnp.abs(own - swapped).max()) > 1e-3


def test_a_pixel_model_refuses_region_objectives_and_a_partial_patch_grid():
    config = pixel_config()
    config.objectives.two['mop'] = 0.25
    with pytest.raises(ConfigError, match=r"config.objectives.two.mop: 'mop' predicts masked"):
        validate(config, num_devices=1)
    config = pixel_config()
    config.model.patch_size = 5
    with pytest.raises(ConfigError, match='image_size=32 does not divide into patches of'):
        validate(config, num_devices=1)
    config = pixel_config()
    config.model.vision_tower.heads = 3
    with pytest.raises(ConfigError, match=r"vision_tower has unknown keys \['heads'\]"):
        validate(config, num_devices=1)
    config = pixel_config()
    config.data.patch_mask.count = 16
    with pytest.raises(ConfigError, match=r'patch_mask.count=16 must be in \[0, 16\)'):
        validate(config, num_devices=1)


def test_block_masks_reach_their_target_in_rectangles_of_bounded_aspect():
    rng = np.random.default_rng(0)
    counts = []
    for _ in range(200):
        mask = masking.mask_patch_blocks(16, 75, rng)
        assert mask.shape == (256,) and mask.dtype == bool
        counts.append(int(mask.sum()))
    assert max(counts) <= 75  # never above the target
    assert np.mean(counts) > 0.95 * 75, np.mean(counts)
    # A target of one block: exactly one rectangle of at most 16 patches, aspect in [0.3, 3.3]
    # (rounding the sides can step just past the bounds).
    aspects = []
    for _ in range(200):
        grid = masking.mask_patch_blocks(16, 16, rng).reshape(16, 16)
        rows, cols = np.flatnonzero(grid.any(1)), np.flatnonzero(grid.any(0))
        h, w = len(rows), len(cols)
        box = grid[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
        if grid.sum() == h * w:  # a single draw filled it (else a second block topped it up)
            assert box.all() and 12 <= h * w <= 16
            aspects.append(h / w)
    assert len(aspects) > 150
    assert 0.25 <= min(aspects) and max(aspects) <= 4.0
    assert min(aspects) < 0.6 and max(aspects) > 1.7  # both orientations occur
    # Deterministic by seed.
    first = masking.mask_patch_blocks(16, 75, np.random.default_rng(3))
    np.testing.assert_array_equal(
        first, masking.mask_patch_blocks(16, 75, np.random.default_rng(3))
    )


def test_the_pixel_demo_config_builds_a_model_that_reads_pixels():
    config = demo_pixels.get_config()
    validate(config, num_devices=1)
    dims = pipeline.data_dims(config.data, 128)
    model = SemVLP(config.model, dims, rngs=nnx.Rngs(0))
    assert isinstance(model.visual_embeddings, PatchEmbeddings)
    assert model.visual_embeddings.tower is None and model.visual_embeddings.projection is None
    assert model.visual_embeddings.position.shape == (1 + 16, config.model.hidden_size)
    batch = {
        'text_ids': jnp.ones((2, 20), jnp.int32),
        'text_mask': jnp.ones((2, 20), jnp.int32),
        'pixels': jax.random.normal(jax.random.key(0), (2, 64, 64, 3)),
    }
    encoded = model(batch, mode='single')
    assert encoded.image.shape == (2, 17, config.model.hidden_size)
    # The image tokens enter at the text embeddings' scale (LayerNorm after the type embedding).
    image_in, _ = model.visual_embeddings(batch, model.text_embeddings.token_type, None)
    np.testing.assert_allclose(jnp.std(image_in, axis=-1), 1.0, rtol=1e-3)
