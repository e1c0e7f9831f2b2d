"""Images as model input: decode, augment (training only), resize, CLIP-normalise. numpy + PIL.

Runs in the input workers, one image at a time. Training views follow ALBEF / SIMLA:
RandomResizedCrop (area scale 0.2-1, aspect 3/4-4/3), a horizontal flip, and RandAugment over
geometric and sharpness/brightness ops only. The ops that work per colour channel or on hue
(Color, AutoContrast, Equalize, Solarize, Posterize, Invert) are left out: captions name colours,
and "a red circle" must stay red. Evaluation resizes only. The output is float32
[image_size, image_size, 3], normalised with CLIP's mean and std.

PIL's own ops are used rather than an augmentation library: albumentations pulls OpenCV and
torchvision pulls PyTorch, neither of which the package otherwise needs, and these few ops are
short. Every random choice comes from the `np.random.Generator` passed in, so a view is
determined by the example's seed (grain's `random_map`).
"""

from __future__ import annotations

import dataclasses
import io
import math

import ml_collections
import numpy as np
from PIL import Image, ImageEnhance

CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], np.float32)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], np.float32)
# What geometric ops fill uncovered pixels with: the mean colour, which normalises to ~0.
FILL = tuple(int(round(255 * v)) for v in CLIP_MEAN)
RESAMPLE = Image.Resampling.BICUBIC


class BadImage(ValueError):
    """Bytes that do not decode as an image; the message names where they came from."""


def decode(data: bytes, where: str) -> np.ndarray:
    """Encoded image bytes -> uint8 [height, width, 3] (RGB). `where` names the dataset, record
    and file for the error when the bytes are missing or do not decode."""
    if not data:
        raise BadImage(f'{where}: no image bytes (was the dataset built with --images?)')
    try:
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(image.convert('RGB'), dtype=np.uint8)
    # Decoders of arbitrary bytes fail in many ways (OSError, SyntaxError, struct.error, ...).
    except Exception as error:
        raise BadImage(f'{where}: cannot decode image: {type(error).__name__}: {error}') from None


def normalise(image: np.ndarray) -> np.ndarray:
    """uint8 [h, w, 3] -> float32 [h, w, 3], (x / 255 - CLIP mean) / CLIP std."""
    return (image.astype(np.float32) / 255.0 - CLIP_MEAN) / CLIP_STD


@dataclasses.dataclass(frozen=True)
class Augment:
    """`config.data.augment`: the training view. `crop_scale`: RandomResizedCrop's area range;
    `randaugment_ops` ops per image at `randaugment_magnitude` (of 10); all off: resize only."""

    crop_scale: tuple[float, float] = (0.2, 1.0)
    flip: bool = True
    randaugment_ops: int = 2
    randaugment_magnitude: int = 7

    @classmethod
    def from_config(cls, augment) -> Augment | None:
        """None when `config.data.augment` is missing, empty or says `enabled=False`."""
        if not augment or not augment.get('enabled', True):
            return None
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in dict(augment).items() if k in fields}
        if 'crop_scale' in values:
            values['crop_scale'] = tuple(values['crop_scale'])
        return cls(**values)

    def problems(self) -> list[tuple[str, str]]:
        """(key, requirement) for every value this augmentation cannot have."""
        low, high = self.crop_scale
        checks = [
            ('crop_scale', 0 < low <= high <= 1, 'must be (low, high) with 0 < low <= high <= 1'),
            ('randaugment_ops', self.randaugment_ops >= 0, 'must be >= 0'),
            (
                'randaugment_magnitude',
                0 <= self.randaugment_magnitude <= 10,
                'must be in [0, 10]',
            ),
        ]
        return [(key, requirement) for key, ok, requirement in checks if not ok]


@dataclasses.dataclass(frozen=True)
class PixelTransform:
    """uint8 image [h, w, 3] (+ rng) -> float32 [image_size, image_size, 3] model input.

    `augment=None` (evaluation, or training without augmentation) resizes only; with `augment`
    and an rng it makes a random training view. An image already of the size passes unresized.
    """

    image_size: int
    augment: Augment | None = None

    def __call__(self, image: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        if self.augment is None or rng is None:
            return normalise(resize(image, self.image_size))
        a = self.augment
        view = random_resized_crop(Image.fromarray(image), self.image_size, a.crop_scale, rng)
        if a.flip and rng.random() < 0.5:
            view = view.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        view = rand_augment(view, a.randaugment_ops, a.randaugment_magnitude, rng)
        return normalise(np.asarray(view, dtype=np.uint8))


def pixel_transform(data: ml_collections.ConfigDict, image_size: int, train: bool):
    """The transform of `config.data` at `image_size`: augmented when `train` and
    `config.data.augment` asks for it, resize only otherwise."""
    augment = Augment.from_config(data.get('augment')) if train else None
    return PixelTransform(image_size, augment)


def resize(image: np.ndarray, size: int) -> np.ndarray:
    """uint8 [h, w, 3] -> uint8 [size, size, 3] (bicubic; the aspect ratio is not kept, as in
    the evaluation transforms of ALBEF and SIMLA)."""
    if image.shape[:2] == (size, size):
        return image
    return np.asarray(Image.fromarray(image).resize((size, size), RESAMPLE), dtype=np.uint8)


def random_resized_crop(
    image: Image.Image,
    size: int,
    scale: tuple[float, float],
    rng: np.random.Generator,
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> Image.Image:
    """A crop of a random area fraction in `scale` and aspect ratio in `ratio` (log-uniform),
    resized to size x size; after 10 misses, the largest centred crop within `ratio`."""
    width, height = image.size
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            left = int(rng.integers(0, width - w + 1))
            top = int(rng.integers(0, height - h + 1))
            return image.resize((size, size), RESAMPLE, box=(left, top, left + w, top + h))
    aspect = width / height
    if aspect < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif aspect > ratio[1]:
        w, h = int(round(height * ratio[1])), height
    else:
        w, h = width, height
    left, top = (width - w) // 2, (height - h) // 2
    return image.resize((size, size), RESAMPLE, box=(left, top, left + w, top + h))


# --- RandAugment without colour ops ---------------------------------------------------------
# Each op takes (image, level in [0, 1], signed rng draw) -> image; level = magnitude / 10.


def _affine(image: Image.Image, matrix: tuple[float, ...]) -> Image.Image:
    return image.transform(image.size, Image.Transform.AFFINE, matrix, fillcolor=FILL)


def _sign(rng: np.random.Generator) -> float:
    return 1.0 if rng.random() < 0.5 else -1.0


RAND_AUGMENT_OPS = {
    'identity': lambda image, level, rng: image,
    'shear_x': lambda image, level, rng: _affine(image, (1, _sign(rng) * 0.3 * level, 0, 0, 1, 0)),
    'shear_y': lambda image, level, rng: _affine(image, (1, 0, 0, _sign(rng) * 0.3 * level, 1, 0)),
    'translate_x': lambda image, level, rng: _affine(
        image, (1, 0, _sign(rng) * 0.3 * level * image.size[0], 0, 1, 0)
    ),
    'translate_y': lambda image, level, rng: _affine(
        image, (1, 0, 0, 0, 1, _sign(rng) * 0.3 * level * image.size[1])
    ),
    'rotate': lambda image, level, rng: image.rotate(
        _sign(rng) * 30 * level, resample=Image.Resampling.BILINEAR, fillcolor=FILL
    ),
    'brightness': lambda image, level, rng: ImageEnhance.Brightness(image).enhance(
        1 + _sign(rng) * 0.9 * level
    ),
    'sharpness': lambda image, level, rng: ImageEnhance.Sharpness(image).enhance(
        1 + _sign(rng) * 0.9 * level
    ),
}
RAND_AUGMENT_NAMES = tuple(RAND_AUGMENT_OPS)


def rand_augment(
    image: Image.Image, num_ops: int, magnitude: int, rng: np.random.Generator
) -> Image.Image:
    """`num_ops` ops drawn uniformly (with replacement) from RAND_AUGMENT_OPS, each applied
    with probability 0.5 at `magnitude` / 10 (ALBEF's RandomAugment)."""
    level = magnitude / 10
    for index in rng.integers(len(RAND_AUGMENT_NAMES), size=num_ops):
        if rng.random() < 0.5:
            image = RAND_AUGMENT_OPS[RAND_AUGMENT_NAMES[index]](image, level, rng)
    return image
