"""Embedded, procedurally generated vision-language dataset (the demo's data; no downloads).

Each scene holds a few coloured shapes on a plain background. A scene comes with what the real
datasets provide: rendered pixels, "detector" region features with boxes and object/attribute
labels, true captions with spatial relations, and VQA-style questions with ten noisy annotator
answers. The scene at (seed, split, index) is generated from
``np.random.default_rng((seed, SPLIT_ID[split], index))`` alone, so any scene can be produced on
its own, in any order, by any process (the dataset can back a grain ``MapDataset``).

Questions are balanced so that neither the question text nor the image alone answers them: counts
and colours spread over several values, and yes/no answers are ~50/50 with negatives that mention
shapes and colours which could plausibly be in the scene.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

SHAPES: tuple[str, ...] = ('circle', 'square', 'triangle', 'diamond', 'cross')
COLOURS: tuple[str, ...] = ('red', 'green', 'blue', 'yellow', 'purple', 'orange')
SIZES: tuple[str, ...] = ('small', 'large')
RELATIONS: tuple[str, ...] = ('left of', 'right of', 'above', 'below')
SPLITS: tuple[str, ...] = ('train', 'val', 'test')
SPLIT_ID: dict[str, int] = {split: split_id for split_id, split in enumerate(SPLITS)}
# Numbers are digits, as the VQA evaluator normalises them.
ANSWERS: tuple[str, ...] = ('yes', 'no', *(str(n) for n in range(10)), *COLOURS, *SHAPES)

PLURALS: dict[str, str] = {
    shape: shape + 'es' if shape.endswith('s') else shape + 's' for shape in SHAPES
}
# Captions spell numbers out; answers use digits.
NUMBER_WORDS: tuple[str, ...] = (
    'zero',
    'one',
    'two',
    'three',
    'four',
    'five',
    'six',
    'seven',
    'eight',
    'nine',
)
OPPOSITE_RELATION: dict[str, str] = {
    'left of': 'right of',
    'right of': 'left of',
    'above': 'below',
    'below': 'above',
}
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
# A relation holds only when centres differ by more than this (normalised), so that stated
# relations are never borderline. Less than the smallest side, so that two separated boxes
# always stand in some relation.
RELATION_MARGIN = 0.1
PLACEMENT_TRIES = 100
NUM_ANNOTATORS = 10
IMAGE_ID_STRIDE = 10**7
# The "detector" is the same for every seed and split, like a pre-trained detector would be.
DETECTOR_SEED = 1234
# Trailing feature dims carrying the box centre and size ([cx, cy, w, h]).
POSITION_DIMS = 4

Box = tuple[float, float, float, float]


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
    render_pixels: bool = True

    def __post_init__(self) -> None:
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
        for field, ok, requirement in checks:
            if not ok:
                raise ValueError(f'SyntheticConfig.{field}={getattr(self, field)!r} {requirement}')


@dataclasses.dataclass(frozen=True)
class SceneObject:
    """One drawn shape; ``box`` is normalised (x1, y1, x2, y2) with y growing downwards."""

    shape: str
    colour: str
    size: str
    box: Box

    @property
    def centre(self) -> tuple[float, float]:
        x1, y1, x2, y2 = self.box
        return (x1 + x2) / 2, (y1 + y2) / 2


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
        scene['captions'] = _captions(rng, objects, config.captions_per_scene)
        scene['questions'] = _questions(rng, objects, config.annotator_accuracy)
        return scene


def caption_corpus(config: SyntheticConfig, size: int) -> Iterator[str]:
    """Captions and questions of the first ``size`` train scenes (text for tokenizer training)."""
    scenes = SyntheticScenes(dataclasses.replace(config, render_pixels=False), 'train', size)
    for index in range(len(scenes)):
        scene = scenes[index]
        yield from scene['captions']
        yield from (question['question'] for question in scene['questions'])


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


def _relations(a: SceneObject, b: SceneObject) -> list[str]:
    """Relations that clearly hold for "a <relation> b", from centres and RELATION_MARGIN."""
    (ax, ay), (bx, by) = a.centre, b.centre
    holds = {
        'left of': bx - ax > RELATION_MARGIN,
        'right of': ax - bx > RELATION_MARGIN,
        'above': by - ay > RELATION_MARGIN,
        'below': ay - by > RELATION_MARGIN,
    }
    return [relation for relation in RELATIONS if holds[relation]]


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


# --- Captions -------------------------------------------------------------------------------


def _with_article(words: list[str]) -> str:
    article = 'an' if words[0][0] in 'aeiou' else 'a'
    return ' '.join([article, *words])


def _noun_phrase(
    rng: np.random.Generator, obj: SceneObject, colour_probability: float = 0.8
) -> str:
    """ "a small red circle", with size and colour each sometimes left out (still true)."""
    keep_size, keep_colour = rng.random(2) < (0.4, colour_probability)
    words = ([obj.size] if keep_size else []) + ([obj.colour] if keep_colour else []) + [obj.shape]
    return _with_article(words)


def _relation_caption(rng: np.random.Generator, objects: list[SceneObject]) -> str:
    first, second = rng.choice(len(objects), size=2, replace=False)
    a, b = objects[first], objects[second]
    relation = str(rng.choice(_relations(a, b)))
    prefix = 'there is ' if rng.random() < 0.3 else ''
    return f'{prefix}{_noun_phrase(rng, a)} {relation} {_noun_phrase(rng, b)}'


def _count_caption(rng: np.random.Generator, objects: list[SceneObject]) -> str:
    return f'there are {NUMBER_WORDS[len(objects)]} objects'


def _group_caption(rng: np.random.Generator, objects: list[SceneObject], by: str) -> str:
    """Lists the scene grouped by colour ("two red shapes and a blue diamond") or by shape
    ("two circles and a green square")."""
    groups: dict[str, list[SceneObject]] = {}
    for row in rng.permutation(len(objects)):
        groups.setdefault(getattr(objects[row], by), []).append(objects[row])
    parts = []
    for value, members in groups.items():
        if len(members) == 1:
            # Grouped by colour, every group names its colour.
            parts.append(_noun_phrase(rng, members[0], 1.0 if by == 'colour' else 0.8))
        elif by == 'colour':
            parts.append(f'{NUMBER_WORDS[len(members)]} {value} shapes')
        else:
            parts.append(f'{NUMBER_WORDS[len(members)]} {PLURALS[value]}')
    return ' and '.join(parts)


_CAPTION_TEMPLATES = (
    (_relation_caption, 0.5),
    (_count_caption, 0.1),
    (functools.partial(_group_caption, by='colour'), 0.2),
    (functools.partial(_group_caption, by='shape'), 0.2),
)


def _captions(rng: np.random.Generator, objects: list[SceneObject], count: int) -> list[str]:
    """``count`` true captions, distinct where the grammar allows."""
    templates = [template for template, _ in _CAPTION_TEMPLATES]
    weights = [weight for _, weight in _CAPTION_TEMPLATES]
    captions: list[str] = []
    for _ in range(20 * count):
        caption = templates[rng.choice(len(templates), p=weights)](rng, objects)
        if caption not in captions:
            captions.append(caption)
        if len(captions) == count:
            return captions
    # Only a tiny scene with many captions requested runs out of distinct ones: repeat.
    return [captions[i % len(captions)] for i in range(count)]


# --- Questions ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Question:
    question: str
    answer: str
    answer_type: str  # "yes/no" | "number" | "other"
    question_type: str  # VQA-style prefix


def _pick(rng: np.random.Generator, values: Sequence[str], present: set[str]) -> str:
    """A value present in the scene (80%) or absent (20%, answers "0"), so counts spread."""
    absent = [value for value in values if value not in present]
    pool = absent if absent and rng.random() < 0.2 else sorted(present, key=values.index)
    return str(rng.choice(pool))


def _count_question(rng: np.random.Generator, objects: list[SceneObject]) -> _Question:
    kind = rng.choice(['objects', 'shape', 'colour', 'size'], p=[0.2, 0.3, 0.3, 0.2])
    if kind == 'objects':
        question, count = 'how many objects are there?', len(objects)
    elif kind == 'shape':
        shape = _pick(rng, SHAPES, {obj.shape for obj in objects})
        question = f'how many {PLURALS[shape]} are there?'
        count = sum(obj.shape == shape for obj in objects)
    else:
        values = COLOURS if kind == 'colour' else SIZES
        value = _pick(rng, values, {getattr(obj, kind) for obj in objects})
        question = f'how many {value} objects are there?'
        count = sum(getattr(obj, kind) == value for obj in objects)
    return _Question(question, str(count), 'number', 'how many')


def _colour_question(rng: np.random.Generator, objects: list[SceneObject]) -> _Question:
    shapes = [obj.shape for obj in objects]
    unique = [obj for obj in objects if shapes.count(obj.shape) == 1]
    obj = unique[rng.integers(len(unique))]
    return _Question(f'what color is the {obj.shape}?', obj.colour, 'other', 'what color is the')


def _existence_question(rng: np.random.Generator, objects: list[SceneObject]) -> _Question:
    """ "is there a (large) red circle?"; negatives recombine colours, shapes and sizes that are
    in the scene, so the words alone do not give the answer away."""
    with_size, answer_yes = rng.random(2) < (0.4, 0.5)
    present = {(obj.size, obj.colour, obj.shape) for obj in objects}
    present_pairs = {(colour, shape) for _, colour, shape in present}
    if answer_yes:
        size, colour, shape = sorted(present)[rng.integers(len(present))]
    else:
        colours = {obj.colour for obj in objects}
        shapes = {obj.shape for obj in objects}
        flipped_sizes = sorted(
            {(SIZES[1 - SIZES.index(size)], colour, shape) for size, colour, shape in present}
            - present
        )

        def absent(colours, shapes):
            return sorted(
                (size, colour, shape)
                for size in SIZES
                for colour in colours
                for shape in shapes
                if (colour, shape) not in present_pairs
            )

        recombined = absent(colours, shapes)
        # Any absent colour-shape pair: there are 30 and a scene has at most 9 objects.
        any_absent = absent(COLOURS, SHAPES)
        pool = next(
            pool for pool in (flipped_sizes if with_size else [], recombined, any_absent) if pool
        )
        size, colour, shape = pool[rng.integers(len(pool))]
    words = ([size] if with_size else []) + [colour, shape]
    return _Question(
        f'is there {_with_article(words)}?', 'yes' if answer_yes else 'no', 'yes/no', 'is there a'
    )


def _unique_reference(
    rng: np.random.Generator, obj: SceneObject, objects: list[SceneObject]
) -> str:
    """A definite description naming exactly this object: "circle", "red circle" or "large red
    circle" (always unique, as no two objects share size, colour and shape)."""
    candidates = []
    for words in ([obj.shape], [obj.colour, obj.shape], [obj.size, obj.colour, obj.shape]):
        keys = [(o.shape, o.colour, o.size)[: len(words)] for o in objects]
        if keys.count((obj.shape, obj.colour, obj.size)[: len(words)]) == 1:
            candidates.append(' '.join(words))
    return str(rng.choice(candidates))


def _relation_question(rng: np.random.Generator, objects: list[SceneObject]) -> _Question:
    first, second = rng.choice(len(objects), size=2, replace=False)
    a, b = objects[first], objects[second]
    # Boxes are MIN_GAP apart and RELATION_MARGIN is below the smallest side: some relation holds.
    relation = str(rng.choice(_relations(a, b)))
    answer_yes = rng.random() < 0.5
    asked = relation if answer_yes else OPPOSITE_RELATION[relation]
    question = (
        f'is the {_unique_reference(rng, a, objects)} {asked} '
        f'the {_unique_reference(rng, b, objects)}?'
    )
    return _Question(question, 'yes' if answer_yes else 'no', 'yes/no', 'is the')


def _wrong_answer(rng: np.random.Generator, question: _Question) -> str:
    """A plausible mistake of the same type: the other yes/no, a count off by one, another
    colour."""
    if question.answer_type == 'yes/no':
        return 'no' if question.answer == 'yes' else 'yes'
    if question.answer_type == 'number':
        count = int(question.answer)
        options = [n for n in (count - 1, count + 1) if 0 <= n <= 9]
        return str(rng.choice(options))
    return str(rng.choice([colour for colour in COLOURS if colour != question.answer]))


def _questions(
    rng: np.random.Generator, objects: list[SceneObject], annotator_accuracy: float
) -> list[dict[str, Any]]:
    questions = []
    for make_question in (
        _count_question,
        _colour_question,
        _existence_question,
        _relation_question,
    ):
        question = make_question(rng, objects)
        correct = rng.random(NUM_ANNOTATORS) < annotator_accuracy
        answers = [question.answer if ok else _wrong_answer(rng, question) for ok in correct]
        questions.append({**dataclasses.asdict(question), 'answers': answers})
    return questions
