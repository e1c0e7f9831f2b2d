"""The words of the synthetic world and what is said about a scene: true captions with spatial
relations, and VQA-style questions with ten noisy annotator answers.

Questions are balanced so that neither the question text nor the image alone answers them: counts
and colours spread over several values, and yes/no answers are ~50/50 with negatives that mention
shapes and colours which could plausibly be in the scene.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import numpy as np

SHAPES: tuple[str, ...] = ('circle', 'square', 'triangle', 'diamond', 'cross')
COLOURS: tuple[str, ...] = ('red', 'green', 'blue', 'yellow', 'purple', 'orange')
SIZES: tuple[str, ...] = ('small', 'large')
RELATIONS: tuple[str, ...] = ('left of', 'right of', 'above', 'below')
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
# A relation holds only when centres differ by more than this (normalised), so that stated
# relations are never borderline. Less than the smallest side, so that two separated boxes
# always stand in some relation.
RELATION_MARGIN = 0.1
NUM_ANNOTATORS = 10

Box = tuple[float, float, float, float]


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


def relations(a: SceneObject, b: SceneObject) -> list[str]:
    """Relations that clearly hold for "a <relation> b", from centres and RELATION_MARGIN."""
    (ax, ay), (bx, by) = a.centre, b.centre
    holds = {
        'left of': bx - ax > RELATION_MARGIN,
        'right of': ax - bx > RELATION_MARGIN,
        'above': by - ay > RELATION_MARGIN,
        'below': ay - by > RELATION_MARGIN,
    }
    return [relation for relation in RELATIONS if holds[relation]]


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
    relation = str(rng.choice(relations(a, b)))
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


def captions(rng: np.random.Generator, objects: list[SceneObject], count: int) -> list[str]:
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


# --- Phrases --------------------------------------------------------------------------------

Phrase = tuple[str, ...]
_SINGULARS: dict[str, str] = {plural: shape for shape, plural in PLURALS.items()}
_ARTICLES = ('a', 'an')


class _NotInGrammar(ValueError):
    pass


def caption_phrases(caption: str) -> list[Phrase]:
    """MVPTR's scene-graph phrases of a caption of `captions()`, in order of first appearance
    (repeats dropped): objects ``(shape,)``, attribute-object pairs ``(shape, size)`` and
    ``(shape, colour)`` (MVPTR's [obj, attr] order) and relation triples ``(subject shape,
    relation, object shape)``.

    Noun phrase by noun phrase in caption order, each gives its object, then its attributes in
    the order written; a relation's triple comes after its object's noun phrase (where it is
    complete). A plural names its shape ("two circles" gives ``('circle',)``); "two red shapes"
    and "there are three objects" name no shape and give nothing. Parses only; draws no random
    numbers. ValueError (naming the caption) for text outside the grammar.
    """
    try:
        return list(dict.fromkeys(_parse_caption(caption.split())))
    except _NotInGrammar as error:
        raise ValueError(f'caption {caption!r} is outside the synthetic grammar: {error}') from None


def _parse_caption(words: list[str]) -> list[Phrase]:
    if words[:2] == ['there', 'are']:
        if len(words) == 4 and words[2] in NUMBER_WORDS and words[3] == 'objects':
            return []
        raise _NotInGrammar('a count caption is "there are <number> objects"')
    prefixed = words[:2] == ['there', 'is']
    if prefixed:
        words = words[2:]
    for start in range(len(words)):
        for relation in RELATIONS:
            length = len(relation.split())
            if words[start : start + length] == relation.split():
                subject, subject_phrases = _noun_phrase_parse(words[:start])
                obj, object_phrases = _noun_phrase_parse(words[start + length :])
                return [*subject_phrases, *object_phrases, (subject, relation, obj)]
    if prefixed:
        raise _NotInGrammar('"there is" starts a relation caption, and none is named')
    phrases: list[Phrase] = []
    part: list[str] = []
    for word in [*words, 'and']:
        if word != 'and':
            part.append(word)
            continue
        phrases += _group_part_parse(part)
        part = []
    return phrases


def _group_part_parse(words: list[str]) -> list[Phrase]:
    """One part of a group caption: a noun phrase, "two circles" or "two red shapes"."""
    if words and words[0] in _ARTICLES:
        return _noun_phrase_parse(words)[1]
    if len(words) == 2 and words[0] in NUMBER_WORDS and words[1] in _SINGULARS:
        return [(_SINGULARS[words[1]],)]
    if len(words) == 3 and words[0] in NUMBER_WORDS and words[1] in COLOURS:
        if words[2] == 'shapes':
            return []
    raise _NotInGrammar(
        f'{" ".join(words)!r} is not a noun phrase, "<number> <plural>" or '
        '"<number> <colour> shapes"'
    )


def _noun_phrase_parse(words: list[str]) -> tuple[str, list[Phrase]]:
    """ "a [size] [colour] shape" -> (shape, its phrases)."""
    rest = list(words)
    if not rest or rest.pop(0) not in _ARTICLES:
        raise _NotInGrammar(f'{" ".join(words)!r} is not "a [size] [colour] shape"')
    attributes = []
    for values in (SIZES, COLOURS):
        if rest and rest[0] in values:
            attributes.append(rest.pop(0))
    if len(rest) != 1 or rest[0] not in SHAPES:
        raise _NotInGrammar(f'{" ".join(words)!r} is not "a [size] [colour] shape"')
    shape = rest[0]
    return shape, [(shape,), *((shape, attribute) for attribute in attributes)]


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
    relation = str(rng.choice(relations(a, b)))
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


def questions(
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
