"""Built datasets (`python -m semvlp_jax.data.build`) as random-access sources of records.

`records(data_dir, name, split)` reads one split as the dataset's record type
(`records.RECORD_TYPES[name]`: a `CaptionRecord`, `VqaRecord`, ... with text as str and ids as
strings), a source for `grain.MapDataset.source`. Region features are not in the text records:
they are joined by image id (`regions.RegionStore`) when the example is built.
"""

from __future__ import annotations

import collections
import dataclasses
import time
from typing import Any

from absl import logging

from semvlp_jax.data import builders
from semvlp_jax.data import records as records_lib
from semvlp_jax.data.image_index import ImageIndex
from semvlp_jax.evaluators.vqa_eval import normalize_answer

CAPTION_DATASETS = ('coco_captions', 'caption_records', 'karpathy')
QUESTION_DATASETS = ('vqa_v2', 'gqa')
PAIR_DATASETS = CAPTION_DATASETS + QUESTION_DATASETS


class Records:
    """The records of one split: `len(source)`, `source[i]` -> the i-th record, decoded.

    `stored` is the tfds data source of the stored dicts (`__len__`, `__getitem__`)."""

    def __init__(self, stored: Any, record_type: type):
        self.stored = stored
        self.record_type = record_type

    def __len__(self) -> int:
        return len(self.stored)

    def __getitem__(self, index: int) -> records_lib.Record:
        return records_lib.from_stored(self.record_type, self.stored[index])

    def __repr__(self) -> str:
        return f'Records({self.record_type.__name__}, {len(self)} records)'


def records(data_dir: str, name: str, split: str) -> Records:
    """The random-access records of one split of a built dataset."""
    builder = builders.open_dataset(name, data_dir)
    if split not in builder.info.splits:
        raise ValueError(
            f'dataset {name} in {data_dir} has no split {split!r}; it has '
            f'{sorted(builder.info.splits)}'
        )
    return Records(builder.as_data_source(split), records_lib.RECORD_TYPES[name])


def visual_records(data_dir: str, name: str, holds: str) -> tuple[Records, ImageIndex]:
    """The one split of a visual dataset (region features or image files) and its image index,
    which must list exactly its records (`holds` names what it holds, for messages)."""
    builder = builders.open_dataset(name, data_dir)
    source = Records(builder.as_data_source(builders.VISUAL_SPLIT), records_lib.RECORD_TYPES[name])
    index = ImageIndex.read(builder.data_dir, holds)
    if len(index) != len(source):
        raise ValueError(
            f'{builder.data_dir}: image_ids.txt lists {len(index)} images but the dataset holds '
            f'{len(source)}; rebuild it with --overwrite'
        )
    return source, index


@dataclasses.dataclass
class Scan:
    """What one pass over a split finds: its image ids, its answers' frequencies and its
    phrases' (MVPTR's, of caption records that carry them: {phrase tuple: captions it is in})."""

    image_ids: set[str]
    answers: collections.Counter
    phrases: collections.Counter = dataclasses.field(default_factory=collections.Counter)


def scan(data_dir: str, name: str, split: str) -> Scan:
    """Reads every record of a split once (before training: a question whose image has no
    features must fail now, not hours in). Answers are each question's one answer
    (`multiple_choice_answer` of VQA, `answer` of GQA), normalised the way the official VQA
    evaluator normalises them (one answer space for both); other datasets have none. Phrases
    are counted once per caption that has them (the phrase vocabulary keeps those seen in
    enough captions)."""
    start = time.time()
    source = records(data_dir, name, split)
    image_ids, answers, phrases = set(), collections.Counter(), collections.Counter()
    for index in range(len(source)):
        record = source[index]
        image_ids.update(record.image_ids)
        answer = _answer(record)
        if answer is not None:
            answers[normalize_answer(answer)] += 1
        if isinstance(record, records_lib.CaptionRecord) and record.phrases:
            phrases.update(set(record.phrase_tuples))
    logging.info(
        'Scanned %s:%s: %d records, %d images in %.1fs',
        name,
        split,
        len(source),
        len(image_ids),
        time.time() - start,
    )
    return Scan(image_ids, answers, phrases)


def _answer(record: records_lib.Record) -> str | None:
    if isinstance(record, records_lib.VqaRecord):
        return record.multiple_choice_answer
    if isinstance(record, records_lib.GqaRecord):
        return record.answer
    return None
