"""Embedded, procedurally generated vision-language dataset (the demo's data; no downloads).

Each scene holds a few coloured shapes on a plain background. A scene comes with what the real
datasets provide: rendered pixels, "detector" region features with boxes and object/attribute
labels, true captions with spatial relations, and VQA-style questions with ten noisy annotator
answers. The scene at (seed, split, index) is generated from
``np.random.default_rng((seed, SPLIT_ID[split], index))`` alone, so any scene can be produced on
its own, in any order, by any process (the dataset can back a grain ``MapDataset``).

The words of this world and the captions and questions about a scene are in
`synthetic_language.py`.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from semvlp_jax.data.synthetic_language import (  # noqa: F401  (the world's words, re-exported)
    ANSWERS,
    COLOURS,
    NUMBER_WORDS,
    PLURALS,
    RELATIONS,
    SHAPES,
    SIZES,
    Box,
    SceneObject,
    captions,
    questions,
)

SPLITS: tuple[str, ...] = ('train', 'val', 'test')
SPLIT_ID: dict[str, int] = {split: split_id for split_id, split in enumerate(SPLITS)}
COLOUR_RGB: dict[str, tuple[int, int, int]] = {
    'red': (220, 40, 40),
    'green': (40, 170, 60),
    'blue': (40, 80, 220),
    'yellow': (240, 210, 40),
    'purple': (140, 60, 180),
    'orange': (245, 140, 30),
}
BACKGROUND_RGB: tuple[int, int, int] = (235, 235, 235)

# Box side lengths (normalised) per size; the gap between the ranges keeps sizes unambiguous.
SIDE_RANGE: dict[str, tuple[float, float]] = {'small': (0.13, 0.17), 'large': (0.22, 0.27)}
# Empty space kept between any two boxes, so shapes never touch or overlap.
MIN_GAP = 0.02
PLACEMENT_TRIES = 100
IMAGE_ID_STRIDE = 10**7
# The "detector" is the same for every seed and split, like a pre-trained detector would be.
DETECTOR_SEED = 1234
# Trailing feature dims carrying the box centre and size ([cx, cy, w, h]).
POSITION_DIMS = 4


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    """What the generated scenes look like; every field is validated on construction."""

    seed: int = 0
    num_regions: int = 8  # rows of region arrays (objects padded up to this)
    feature_dim: int = 64  # region feature size
    image_size: int = 64  # rendered pixels are [image_size, image_size, 3] uint8
    min_objects: int = 2
    max_objects: int = 5
    feature_noise: float = 0.3  # std of Gaussian noise on region features (detector noise)
    captions_per_scene: int = 5
    annotator_accuracy: float = 0.9  # prob. that each annotator gives the true answer
    render_pixels: bool = False  # the model reads region features; pixels are for pictures

    def __post_init__(self) -> None:
        problem = next(iter(self.problems()), None)
        if problem is not None:
            field, requirement = problem
            raise ValueError(f'SyntheticConfig.{field}={getattr(self, field)!r} {requirement}')

    def problems(self) -> list[tuple[str, str]]:
        """(field, requirement) for every field whose value these scenes cannot have. The one
        statement of the rules: `config_checks` reports them as `config.data.<field>` before a
        run builds anything, and construction refuses them."""
        checks = [
            ('seed', self.seed >= 0, 'must be >= 0'),
            ('num_regions', self.num_regions >= 2, 'must be >= 2'),
            (
                'feature_dim',
                self.feature_dim > POSITION_DIMS + 4,
                f'must be > {POSITION_DIMS + 4} (the last {POSITION_DIMS} dims hold the box)',
            ),
            ('image_size', self.image_size >= 16, 'must be >= 16 pixels to draw small shapes'),
            # A relation question needs two objects.
            (
                'min_objects',
                2 <= self.min_objects <= self.max_objects,
                f'must be in [2, max_objects={self.max_objects}]',
            ),
            # Counts are answered with one digit.
            (
                'max_objects',
                self.max_objects <= min(self.num_regions, 9),
                f'must be <= num_regions={self.num_regions} and <= 9',
            ),
            ('feature_noise', self.feature_noise >= 0, 'must be >= 0'),
            ('captions_per_scene', self.captions_per_scene >= 1, 'must be >= 1'),
            ('annotator_accuracy', 0 <= self.annotator_accuracy <= 1, 'must be in [0, 1]'),
        ]
        return [(field, requirement) for field, ok, requirement in checks if not ok]

    # The `config.data` keys that describe the scenes (the rest keep their defaults).
    DATA_KEYS = (
        'seed',
        'num_regions',
        'feature_dim',
        'min_objects',
        'max_objects',
        'feature_noise',
    )

    @classmethod
    def unchecked(cls, data) -> SyntheticConfig:
        """The scenes `config.data` describes, without the construction check (for reporting
        its problems under the config's own key names)."""
        config = object.__new__(cls)
        for field in dataclasses.fields(cls):
            value = data[field.name] if field.name in cls.DATA_KEYS else field.default
            object.__setattr__(config, field.name, value)
        return config

    @classmethod
    def from_data(cls, data) -> SyntheticConfig:
        """The scenes of `config.data` (a validated config: its values hold)."""
        return cls(**{key: data[key] for key in cls.DATA_KEYS})


@dataclasses.dataclass(frozen=True)
class DetectorCodes:
    """Fixed random vectors from which region features are built (the "detector").

    ``shapes``: [len(SHAPES), code_dim]; ``colours``: [len(COLOURS), code_dim];
    ``size_direction``: [code_dim], scaled by the object's side length. code_dim is
    feature_dim - POSITION_DIMS.
    """

    shapes: np.ndarray
    colours: np.ndarray
    size_direction: np.ndarray


@functools.cache
def detector_codes(feature_dim: int) -> DetectorCodes:
    """The codes for ``feature_dim``; independent of the config's seed and of the split."""
    rng = np.random.default_rng((DETECTOR_SEED, feature_dim))
    code_dim = feature_dim - POSITION_DIMS
    codes = DetectorCodes(
        shapes=rng.standard_normal((len(SHAPES), code_dim)).astype(np.float32),
        colours=rng.standard_normal((len(COLOURS), code_dim)).astype(np.float32),
        size_direction=rng.standard_normal(code_dim).astype(np.float32),
    )
    for array in dataclasses.astuple(codes):
        array.flags.writeable = False  # shared by every scene through the cache
    return codes


class SyntheticScenes:
    """One split of synthetic scenes with random access: ``len()`` and ``scenes[i] -> dict``.

    A scene dict holds (numpy values; R = config.num_regions, D = config.feature_dim):
      image_id: int, unique across splits (SPLIT_ID * 10**7 + index).
      pixels: uint8 [image_size, image_size, 3] (only if config.render_pixels).
      region_features: float32 [R, D], zero rows for padding.
      region_boxes: float32 [R, 4] normalised x1, y1, x2, y2; zero rows for padding.
      region_mask: bool [R], True for real objects.
      object_labels: int32 [R] index into SHAPES, -1 for padding.
      attribute_labels: int32 [R] index into COLOURS, -1 for padding.
      captions: list[str] of config.captions_per_scene true captions.
      questions: list of 4 dicts (counting, colour, existence, relation) with keys question,
        answers (10 annotator answers), answer (the truth), answer_type, question_type.
    """

    def __init__(self, config: SyntheticConfig, split: str, size: int):
        if split not in SPLIT_ID:
            raise ValueError(f'unknown split {split!r}; expected one of {SPLITS}')
        if not 0 <= size <= IMAGE_ID_STRIDE:
            raise ValueError(f'split size {size} must be in [0, {IMAGE_ID_STRIDE}]')
        self.config = config
        self.split = split
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self.size:
            raise IndexError(f'index {index} out of range for {self.split} split of {self.size}')
        index = int(index)
        config = self.config
        rng = np.random.default_rng((config.seed, SPLIT_ID[self.split], index))
        objects = _sample_objects(rng, config.min_objects, config.max_objects)
        # Rows in random order, so that the row of an object tells nothing about it.
        rows = rng.permutation(len(objects))
        scene: dict[str, Any] = {'image_id': SPLIT_ID[self.split] * IMAGE_ID_STRIDE + index}
        if config.render_pixels:
            scene['pixels'] = render(objects, config.image_size)
        scene.update(_region_arrays(rng, [objects[row] for row in rows], config))
        scene['captions'] = captions(rng, objects, config.captions_per_scene)
        scene['questions'] = questions(rng, objects, config.annotator_accuracy)
        return scene


class CachedScenes:
    """A split of scenes that keeps every scene once generated, so epochs after the first skip
    scene generation (which costs more than turning a scene into an example; a split of 20k
    scenes takes about 60 MB)."""

    def __init__(self, scenes: SyntheticScenes):
        self._scenes = scenes
        self._cache: dict[int, dict] = {}
        self.config, self.split = scenes.config, scenes.split

    def __len__(self) -> int:
        return len(self._scenes)

    def __getitem__(self, index: int) -> dict:
        scene = self._cache.get(index)
        if scene is None:
            scene = self._cache[index] = self._scenes[index]
        return scene

    def __getstate__(self) -> dict:
        """Pickled (to input workers) without the cache: each process generates and keeps the
        scenes it reads, rather than receiving a copy of every scene made so far."""
        return {**self.__dict__, '_cache': {}}


def with_pixels(config: SyntheticConfig, image_size: int) -> SyntheticConfig:
    """`config`'s scenes rendered as image_size x image_size pixels too (what a model that reads
    pixels sees; the same objects, region arrays and texts)."""
    return dataclasses.replace(config, render_pixels=True, image_size=image_size)


def text_scenes(config: SyntheticConfig, size: int) -> CachedScenes:
    """The first ``size`` train scenes without pixels, kept once generated: the source of the
    texts a tokenizer is trained on, read more than once."""
    return CachedScenes(
        SyntheticScenes(dataclasses.replace(config, render_pixels=False), 'train', size)
    )


def scene_texts(scenes: SyntheticScenes | CachedScenes) -> Iterator[str]:
    """Each scene's captions, then its questions, scene by scene."""
    for index in range(len(scenes)):
        scene = scenes[index]
        yield from scene['captions']
        yield from (question['question'] for question in scene['questions'])


def caption_corpus(config: SyntheticConfig, size: int) -> Iterator[str]:
    """Captions and questions of the first ``size`` train scenes (text for tokenizer training)."""
    return scene_texts(text_scenes(config, size))


def render(objects: Sequence[SceneObject], image_size: int) -> np.ndarray:
    """Draws the objects filling their boxes; returns uint8 [image_size, image_size, 3]."""
    image = Image.new('RGB', (image_size, image_size), BACKGROUND_RGB)
    draw = ImageDraw.Draw(image)
    for obj in objects:
        x1, y1, x2, y2 = (round(v * image_size) for v in obj.box)
        x2, y2 = x2 - 1, y2 - 1  # PIL boxes include their last pixel
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        fill = COLOUR_RGB[obj.colour]
        if obj.shape == 'circle':
            draw.ellipse((x1, y1, x2, y2), fill=fill)
        elif obj.shape == 'square':
            draw.rectangle((x1, y1, x2, y2), fill=fill)
        elif obj.shape == 'triangle':
            draw.polygon([(cx, y1), (x2, y2), (x1, y2)], fill=fill)
        elif obj.shape == 'diamond':
            draw.polygon([(cx, y1), (x2, cy), (cx, y2), (x1, cy)], fill=fill)
        elif obj.shape == 'cross':
            half_bar = (x2 - x1) / 6
            draw.rectangle((x1, cy - half_bar, x2, cy + half_bar), fill=fill)
            draw.rectangle((cx - half_bar, y1, cx + half_bar, y2), fill=fill)
        else:
            raise ValueError(f'unknown shape {obj.shape!r}')
    return np.asarray(image, dtype=np.uint8)


# --- Scene layout ---------------------------------------------------------------------------


def _sample_objects(
    rng: np.random.Generator, min_objects: int, max_objects: int
) -> list[SceneObject]:
    num_objects = int(rng.integers(min_objects, max_objects + 1))
    placed = _place_boxes(rng, [SIZES[i] for i in rng.integers(len(SIZES), size=num_objects)])
    shapes, colours = _sample_shapes_and_colours(rng, [size for size, _ in placed])
    return [
        SceneObject(shape, colour, size, box)
        for (size, box), shape, colour in zip(placed, shapes, colours)
    ]


def _place_boxes(rng: np.random.Generator, sizes: list[str]) -> list[tuple[str, Box]]:
    """Places square boxes that keep MIN_GAP apart; returns (size, box) per placed object.

    A large object that finds no room is tried as a small one; when even that fails the scene
    keeps the objects placed so far (only crowded configs with many objects get there).
    """
    placed: list[tuple[str, Box]] = []
    for size in sizes:
        for candidate_size in dict.fromkeys((size, 'small')):
            box = _try_place(rng, candidate_size, [box for _, box in placed])
            if box is not None:
                placed.append((candidate_size, box))
                break
        else:
            break
    return placed


def _try_place(rng: np.random.Generator, size: str, others: list[Box]) -> Box | None:
    for _ in range(PLACEMENT_TRIES):
        side = rng.uniform(*SIDE_RANGE[size])
        x1, y1 = rng.uniform(0, 1 - side, size=2)
        box = (float(x1), float(y1), float(x1 + side), float(y1 + side))
        if all(_separated(box, other) for other in others):
            return box
    return None


def _separated(a: Box, b: Box) -> bool:
    return (
        a[2] + MIN_GAP <= b[0]
        or b[2] + MIN_GAP <= a[0]
        or a[3] + MIN_GAP <= b[1]
        or b[3] + MIN_GAP <= a[1]
    )


def _sample_shapes_and_colours(
    rng: np.random.Generator, sizes: list[str]
) -> tuple[list[str], list[str]]:
    """Shapes and colours, resampled until (1) no two objects share size, colour and shape, so
    "the large red circle" always names one object, and (2) some shape occurs exactly once, so a
    colour question can be asked about it.

    Colours come from a small per-scene palette: repeated colours make colour counts spread over
    several values instead of being nearly always 1.
    """
    while True:
        palette_size = int(rng.integers(2, 5))
        palette = rng.choice(len(COLOURS), size=palette_size, replace=False)
        colours = [COLOURS[i] for i in rng.choice(palette, size=len(sizes))]
        shapes = [SHAPES[i] for i in rng.integers(len(SHAPES), size=len(sizes))]
        distinct = len(set(zip(sizes, colours, shapes))) == len(sizes)
        if distinct and 1 in (shapes.count(shape) for shape in shapes):
            return shapes, colours


# --- Region features ------------------------------------------------------------------------


def _region_arrays(
    rng: np.random.Generator, objects: list[SceneObject], config: SyntheticConfig
) -> dict[str, np.ndarray]:
    """Region arrays with one row per object (in the given order), zero-padded to num_regions."""
    rows, num_objects = config.num_regions, len(objects)
    codes = detector_codes(config.feature_dim)
    boxes = np.zeros((rows, 4), np.float32)
    boxes[:num_objects] = [obj.box for obj in objects]
    object_labels = np.full(rows, -1, np.int32)
    object_labels[:num_objects] = [SHAPES.index(obj.shape) for obj in objects]
    attribute_labels = np.full(rows, -1, np.int32)
    attribute_labels[:num_objects] = [COLOURS.index(obj.colour) for obj in objects]

    real_boxes = boxes[:num_objects]
    sides = real_boxes[:, 2] - real_boxes[:, 0]
    centres = (real_boxes[:, :2] + real_boxes[:, 2:]) / 2
    features = np.zeros((rows, config.feature_dim), np.float32)
    features[:num_objects, :-POSITION_DIMS] = (
        codes.shapes[object_labels[:num_objects]]
        + codes.colours[attribute_labels[:num_objects]]
        # Scaled so that small and large objects differ by about one code's magnitude.
        + (sides / SIDE_RANGE['large'][1])[:, None] * codes.size_direction
    )
    features[:num_objects, -POSITION_DIMS:] = np.concatenate(
        [centres, real_boxes[:, 2:] - real_boxes[:, :2]], axis=1
    )
    features[:num_objects] += config.feature_noise * rng.standard_normal(
        (num_objects, config.feature_dim), dtype=np.float32
    )
    mask = np.arange(rows) < num_objects
    return {
        'region_features': features,
        'region_boxes': boxes,
        'region_mask': mask,
        'object_labels': object_labels,
        'attribute_labels': attribute_labels,
    }
