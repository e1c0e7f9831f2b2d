"""Built datasets (`python -m semvlp_jax.data.build`) as grain sources of image-text pairs.

A pair is `{'image_id': str, 'text': str, 'answers': tuple[str, ...]}`: a caption has no
answers; a VQA question has its ten annotator answers and a GQA question its one answer, all
normalised the way the official VQA evaluator normalises them (one answer space for both). Region features are not in the pair: they
are joined by image id (`regions.RegionStore`) when the example is built.
"""

from __future__ import annotations

import collections
import dataclasses
import time
from collections.abc import Callable

import grain
from absl import logging

from semvlp_jax.data import builders
from semvlp_jax.evaluators.vqa_eval import normalize_answer

CAPTION_DATASETS = ('coco_captions', 'caption_records', 'karpathy')
QUESTION_DATASETS = ('vqa_v2', 'gqa')
PAIR_DATASETS = CAPTION_DATASETS + QUESTION_DATASETS


def _text(value: bytes) -> str:
    return value.decode('utf-8')


def _caption(record: dict) -> dict:
    return {'image_id': _text(record['image_id']), 'text': _text(record['caption']), 'answers': ()}


def _vqa_question(record: dict) -> dict:
    return {
        'image_id': _text(record['image_id']),
        'text': _text(record['question']),
        'answers': tuple(normalize_answer(_text(a)) for a in record['answers']),
    }


def _gqa_question(record: dict) -> dict:
    answer = normalize_answer(_text(record['answer']))
    return {
        'image_id': _text(record['image_id']),
        'text': _text(record['question']),
        'answers': (answer,) if answer else (),
    }


TO_PAIR: dict[str, Callable[[dict], dict]] = {
    **{name: _caption for name in CAPTION_DATASETS},
    'vqa_v2': _vqa_question,
    'gqa': _gqa_question,
}

# Fields naming a record's image(s), where not `image_id`.
IMAGE_FIELDS = {'nlvr2': ('left_image_id', 'right_image_id')}
# The field of each dataset that names the answer used to build a vocabulary.
ANSWER_FIELD = {'vqa_v2': 'multiple_choice_answer', 'gqa': 'answer'}


def records(data_dir: str, name: str, split: str):
    """The random-access records of one split of a built dataset."""
    builder = builders.open_dataset(name, data_dir)
    if split not in builder.info.splits:
        raise ValueError(
            f'dataset {name} in {data_dir} has no split {split!r}; it has '
            f'{sorted(builder.info.splits)}'
        )
    return builder.as_data_source(split)


def pairs(data_dir: str, name: str, split: str) -> grain.MapDataset:
    if name not in TO_PAIR:
        raise ValueError(
            f'dataset {name!r} has no image-text pairs for pre-training; '
            f'expected one of {sorted(TO_PAIR)}'
        )
    return grain.MapDataset.source(records(data_dir, name, split)).map(TO_PAIR[name])


@dataclasses.dataclass
class Scan:
    """What one pass over a split finds: its image ids and its answers' frequencies."""

    image_ids: set[str]
    answers: collections.Counter


def scan(data_dir: str, name: str, split: str) -> Scan:
    """Reads every record of a split once (before training: a question whose image has no
    features must fail now, not hours in)."""
    start = time.time()
    source = records(data_dir, name, split)
    image_fields = IMAGE_FIELDS.get(name, ('image_id',))
    answer_field = ANSWER_FIELD.get(name)
    image_ids, answers = set(), collections.Counter()
    for index in range(len(source)):
        record = source[index]
        image_ids.update(_text(record[f]) for f in image_fields)
        if answer_field:
            answers[normalize_answer(_text(record[answer_field]))] += 1
    logging.info(
        'Scanned %s:%s: %d records, %d images in %.1fs',
        name,
        split,
        len(source),
        len(image_ids),
        time.time() - start,
    )
    return Scan(image_ids, answers)
