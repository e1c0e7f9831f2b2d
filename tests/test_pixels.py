"""Image transforms of the input pipeline (data/pixels.py): decode, training views, evaluation."""

import io

import numpy as np
import pytest
from PIL import Image

from semvlp_jax.data import pixels


def photo(width=48, height=40, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def encoded(image: np.ndarray, format='PNG') -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=format)
    return buffer.getvalue()


def test_decode_gives_the_stored_pixels_and_names_bad_bytes():
    image = photo()
    np.testing.assert_array_equal(pixels.decode(encoded(image), 'x'), image)
    grey = Image.fromarray(image[..., 0], mode='L')
    buffer = io.BytesIO()
    grey.save(buffer, format='PNG')
    assert pixels.decode(buffer.getvalue(), 'x').shape == (40, 48, 3)  # always RGB
    with pytest.raises(pixels.BadImage, match=r'coco:train record 7 \(a\.jpg\): cannot decode'):
        pixels.decode(encoded(image)[:50], 'coco:train record 7 (a.jpg)')
    with pytest.raises(pixels.BadImage, match='no image bytes'):
        pixels.decode(b'', 'coco:train record 7')


def test_evaluation_resizes_and_normalises_with_clip_statistics_only():
    image = photo()
    transform = pixels.PixelTransform(32, pixels.Augment())
    out = transform(image)  # no rng: the evaluation view, even with augmentation configured
    resized = np.asarray(Image.fromarray(image).resize((32, 32), Image.Resampling.BICUBIC))
    expected = (resized / 255.0 - pixels.CLIP_MEAN) / pixels.CLIP_STD
    np.testing.assert_allclose(out, expected, atol=1e-5)
    assert out.dtype == np.float32 and out.shape == (32, 32, 3)
    same_size = photo(32, 32)
    np.testing.assert_array_equal(pixels.resize(same_size, 32), same_size)


def test_training_views_are_deterministic_by_seed_and_differ_between_seeds():
    image = photo(64, 64)
    transform = pixels.PixelTransform(32, pixels.Augment())
    first = transform(image, np.random.default_rng(5))
    np.testing.assert_array_equal(first, transform(image, np.random.default_rng(5)))
    views = [transform(image, np.random.default_rng(seed)) for seed in range(6)]
    assert all(not np.array_equal(views[0], view) for view in views[1:])
    assert not np.allclose(first, transform(image))  # augmented differs from evaluation
    off = pixels.pixel_transform({'augment': {'enabled': False}}, 32, train=True)
    np.testing.assert_array_equal(off(image, np.random.default_rng(5)), transform(image))


def test_random_resized_crop_takes_a_region_of_the_image():
    # A left half black and a right half white: a crop is all of one colour or shows the edge.
    image = np.zeros((64, 64, 3), np.uint8)
    image[:, 32:] = 255
    rng = np.random.default_rng(0)
    means = []
    for _ in range(50):
        view = pixels.random_resized_crop(Image.fromarray(image), 16, (0.2, 0.3), rng)
        assert view.size == (16, 16)
        means.append(np.asarray(view).mean())
    assert min(means) < 30 and max(means) > 225  # some crops fall inside one half


def test_rand_augment_keeps_hues():
    # Every op keeps a pure red pixel red (no channel-wise or hue op is in the list).
    red = np.zeros((32, 32, 3), np.uint8)
    red[8:24, 8:24] = (220, 40, 40)
    rng = np.random.default_rng(0)
    for name, op in pixels.RAND_AUGMENT_OPS.items():
        out = np.asarray(op(Image.fromarray(red), 0.7, rng)).astype(int)
        reddish = out[..., 0] > out[..., 1] + 60
        assert reddish.sum() > 50, name


def test_augment_values_are_checked():
    assert pixels.Augment(crop_scale=(0.5, 0.2)).problems()[0][0] == 'crop_scale'
    assert pixels.Augment(randaugment_magnitude=11).problems()[0][0] == 'randaugment_magnitude'
    assert pixels.Augment().problems() == []
