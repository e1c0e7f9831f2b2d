"""The four downstream tasks on the synthetic scenes, as the records the real files give.

Each function turns a split of `SyntheticScenes` into the records (`records.py`) that the readers
of the real dataset produce, so tasks read synthetic and real data the same way and the local
evaluators score both alike:

  VQA v2     VqaRecord per question (ten annotator answers)
  GQA        GqaRecord per question (one exact answer)
  NLVR2      Nlvr2Record per sentence and image pair
  retrieval  CaptionRecord per caption (five per image), with its phrases as MVPTR's
             caption records carry them

NLVR2 statements are about two scenes. As in NLVR2, every sentence is judged against four image
pairs (identifiers `split-set-pair-0`, pairs 0..3), so that consistency (all four right) can be
measured. Sentences are drawn from the first pair's contents until one is true for exactly two of
the four pairs (or the closest after a few draws): labels are then balanced, and neither the
sentence nor one image alone gives the answer away.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable, Iterator

import numpy as np

from semvlp_jax.data import synthetic
from semvlp_jax.data.records import (
    NLVR2_FALSE,
    NLVR2_TRUE,
    CaptionRecord,
    GqaRecord,
    Nlvr2Record,
    VqaRecord,
    phrase_text,
)
from semvlp_jax.data.synthetic_language import caption_phrases

# NLVR2: image pairs per sentence, and scenes per sentence set (two per pair).
PAIRS_PER_SENTENCE = 4
SCENES_PER_SET = 2 * PAIRS_PER_SENTENCE
SENTENCE_DRAWS = 20
NLVR2_STREAM = 7  # keeps the NLVR2 sentence draws apart from the scenes' own random streams


# How often each word of the synthetic lexicon is repeated at the end of the tokenizer corpus.
LEXICON_REPEATS = 20


def text_corpus(config: synthetic.SyntheticConfig, size: int) -> Iterator[str]:
    """Every kind of text the synthetic tasks use, from the first `size` train scenes (captions,
    questions and answers, NLVR2 sentences), then each word of the lexicon (those words and the
    digits of every possible count or total) LEXICON_REPEATS times on a line of its own.

    The tokenizer is word-level and keeps only words it sees often enough: a rare word (a large
    total, "exactly") would otherwise be unknown to every task that uses it.
    """
    scenes = synthetic.text_scenes(config, size)  # generated once, read three times
    texts = list(synthetic.scene_texts(scenes))
    for index in range(len(scenes)):
        texts += [question['answer'] for question in scenes[index]['questions']]
    texts += [record.sentence for record in nlvr2(scenes, config.seed)[::PAIRS_PER_SENTENCE]]
    yield from texts
    lexicon = {word for text in texts for word in text.replace('?', ' ').split()}
    lexicon |= {str(n) for n in range(2 * config.max_objects + 2)}
    for word in sorted(lexicon):
        yield from [word] * LEXICON_REPEATS


def question_id(image_id: int, index: int) -> str:
    return str(image_id * 10 + index)


def vqa(scenes: synthetic.SyntheticScenes) -> list[VqaRecord]:
    """Every question of every scene, as VQA v2 records (ten annotator answers each)."""
    return [
        VqaRecord(
            question_id=question_id(scene['image_id'], q),
            image_id=str(scene['image_id']),
            question=question['question'],
            question_type=question['question_type'],
            answer_type=question['answer_type'],
            # The official field: the most frequent of the ten answers.
            multiple_choice_answer=collections.Counter(question['answers']).most_common(1)[0][0],
            answers=tuple(question['answers']),
            answer_confidences=('yes',) * len(question['answers']),
        )
        for scene in _all(scenes)
        for q, question in enumerate(scene['questions'])
    ]


# GQA's structural types: yes/no questions verify, the others query.
_GQA_STRUCTURE = {'yes/no': 'verify', 'number': 'query', 'other': 'query'}


def gqa(scenes: synthetic.SyntheticScenes) -> list[GqaRecord]:
    """Balanced-questions records: one exact answer per question (the scene's truth; GQA has no
    annotator noise)."""
    return [
        GqaRecord(
            question_id=question_id(scene['image_id'], q),
            image_id=str(scene['image_id']),
            question=question['question'],
            answer=question['answer'],
            structural=_GQA_STRUCTURE[question['answer_type']],
        )
        for scene in _all(scenes)
        for q, question in enumerate(scene['questions'])
    ]


def captions(scenes: synthetic.SyntheticScenes, size: int | None = None) -> list[CaptionRecord]:
    """The captions of the first `size` scenes (all when None), image by image, each with its
    scene-graph phrases (`caption_phrases`)."""
    size = len(scenes) if size is None else size
    return [
        CaptionRecord(
            image_id=str(scene['image_id']),
            caption=caption,
            caption_index=i,
            phrases=tuple(phrase_text(phrase) for phrase in caption_phrases(caption)),
        )
        for scene in (scenes[index] for index in range(size))
        for i, caption in enumerate(scene['captions'])
    ]


def _all(scenes) -> Iterator[dict]:
    return (scenes[index] for index in range(len(scenes)))


# --- NLVR2 ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Facts:
    """What a statement can be about in one scene."""

    shapes: tuple[str, ...]
    colours: tuple[str, ...]
    objects: frozenset[tuple[str, str]]  # (colour, shape)

    @classmethod
    def of(cls, scene: dict) -> _Facts:
        real = scene['object_labels'] >= 0
        shapes = tuple(synthetic.SHAPES[i] for i in scene['object_labels'][real])
        colours = tuple(synthetic.COLOURS[i] for i in scene['attribute_labels'][real])
        return cls(shapes, colours, frozenset(zip(colours, shapes)))


Statement = tuple[str, Callable[[_Facts, _Facts], bool]]


def _total(rng, left: _Facts, right: _Facts) -> Statement:
    n = len(left.shapes) + len(right.shapes) + int(rng.choice([0, 0, -1, 1]))
    return (
        f'there are {n} objects in total',
        lambda a, b: len(a.shapes) + len(b.shapes) == n,
    )


def _both_contain_colour(rng, left: _Facts, right: _Facts) -> Statement:
    colour = str(rng.choice(sorted(set(left.colours))))
    return (
        f'both images contain a {colour} object',
        lambda a, b: colour in a.colours and colour in b.colours,
    )


def _more_objects(rng, left: _Facts, right: _Facts) -> Statement:
    if rng.random() < 0.5:
        return (
            'the left image has more objects than the right image',
            lambda a, b: len(a.shapes) > len(b.shapes),
        )
    return (
        'the left image has fewer objects than the right image',
        lambda a, b: len(a.shapes) < len(b.shapes),
    )


def _exactly_one_contains(rng, left: _Facts, right: _Facts) -> Statement:
    shape = str(rng.choice(sorted(set(left.shapes) | set(right.shapes))))
    return (
        f'exactly one image contains a {shape}',
        lambda a, b: (shape in a.shapes) != (shape in b.shapes),
    )


def _side_contains(rng, left: _Facts, right: _Facts) -> Statement:
    side = str(rng.choice(['left', 'right']))
    facts = left if side == 'left' else right
    if rng.random() < 0.5:
        colour, shape = sorted(facts.objects)[rng.integers(len(facts.objects))]
    else:
        colour, shape = str(rng.choice(synthetic.COLOURS)), str(rng.choice(synthetic.SHAPES))

    def holds(a: _Facts, b: _Facts) -> bool:
        return (colour, shape) in (a if side == 'left' else b).objects

    return f'the {side} image contains a {colour} {shape}', holds


def _same_count(rng, left: _Facts, right: _Facts) -> Statement:
    shape = str(rng.choice(sorted(set(left.shapes) | set(right.shapes))))
    return (
        f'the two images contain the same number of {synthetic.PLURALS[shape]}',
        lambda a, b: a.shapes.count(shape) == b.shapes.count(shape),
    )


_STATEMENTS = (
    _total,
    _both_contain_colour,
    _more_objects,
    _exactly_one_contains,
    _side_contains,
    _same_count,
)


def nlvr2(scenes: synthetic.SyntheticScenes, seed: int) -> list[Nlvr2Record]:
    """NLVR2 records for the split: one sentence per set of SCENES_PER_SET scenes, judged on each
    of the set's PAIRS_PER_SENTENCE image pairs."""
    records = []
    for set_id in range(len(scenes) // SCENES_PER_SET):
        first = set_id * SCENES_PER_SET
        pairs = [
            (scenes[first + 2 * p], scenes[first + 2 * p + 1]) for p in range(PAIRS_PER_SENTENCE)
        ]
        facts = [(_Facts.of(left), _Facts.of(right)) for left, right in pairs]
        rng = np.random.default_rng((seed, NLVR2_STREAM, synthetic.SPLIT_ID[scenes.split], set_id))
        best = None
        for _ in range(SENTENCE_DRAWS):
            sentence, holds = _STATEMENTS[rng.integers(len(_STATEMENTS))](rng, *facts[0])
            labels = [holds(*pair) for pair in facts]
            if best is None or abs(sum(labels) - 2) < abs(sum(best[1]) - 2):
                best = sentence, labels
            if sum(labels) == 2:
                break
        sentence, labels = best
        for p, ((left, right), label) in enumerate(zip(pairs, labels)):
            records.append(
                Nlvr2Record(
                    identifier=f'{scenes.split}-{set_id}-{p}-0',
                    sentence=sentence,
                    label=NLVR2_TRUE if label else NLVR2_FALSE,
                    left_image_id=str(left['image_id']),
                    right_image_id=str(right['image_id']),
                )
            )
    return records
