"""One record type per dataset, defined once.

The readers of the real files (`formats/`) and the synthetic generator (`synthetic_tasks.py`)
both produce these; the tfds builders store their fields (the stored schema is derived from
the dataclass fields, see `builders.py`); pipelines and tasks consume them as they are. The
official files that evaluators read are written from records and predictions at scoring time
only (each task's adapter). Ids are strings everywhere (VQA's integer ids become '42').

Array fields carry their stored shape and dtype in the field metadata (`ARRAY`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

ARRAY = 'array'  # field metadata key: (shape, dtype) of an array field


def _array(shape: tuple, dtype) -> Any:
    return dataclasses.field(metadata={ARRAY: (shape, np.dtype(dtype))})


class _OfOneImage:
    """A record about the one image `image_id`."""

    image_id: str

    @property
    def image_ids(self) -> tuple[str, ...]:
        """Every image the record names (NLVR2 names two)."""
        return (self.image_id,)


@dataclasses.dataclass(frozen=True, eq=False)
class RegionRecord(_OfOneImage):
    """One image's detector output. Boxes are (x1, y1, x2, y2) divided by (w, h, w, h); labels
    are -1 where the file has none."""

    image_id: str
    image_height: int
    image_width: int
    features: np.ndarray = _array((None, None), np.float32)  # [regions, feature_dim]
    boxes: np.ndarray = _array((None, 4), np.float32)  # [regions, 4]
    objects: np.ndarray = _array((None,), np.int32)  # [regions]
    attributes: np.ndarray = _array((None,), np.int32)  # [regions]

    def __eq__(self, other) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(
            np.array_equal(getattr(self, f.name), getattr(other, f.name))
            for f in dataclasses.fields(self)
        )


@dataclasses.dataclass(frozen=True)
class ImageRecord(_OfOneImage):
    """One image file, encoded as it was (JPEG, PNG, ...), for models that read pixels.
    `image_path` is relative to the directory it was built from; the size is the decoded one."""

    image_id: str
    image_path: str
    image_height: int
    image_width: int
    image: bytes


# Joins the words of one stored phrase (`CaptionRecord.phrases`): the ASCII unit separator,
# made for separating fields inside text, never part of a caption's word (readers refuse one
# that holds it).
PHRASE_SEPARATOR = '\x1f'


def phrase_text(words) -> str:
    """One phrase as `CaptionRecord.phrases` stores it: its words joined by PHRASE_SEPARATOR."""
    return PHRASE_SEPARATOR.join(words)


@dataclasses.dataclass(frozen=True)
class CaptionRecord(_OfOneImage):
    """One caption of one image. `caption_index` is its position among its image's captions in
    the file; `image` the encoded image file when built with --images, else empty.

    `phrases` are MVPTR's scene-graph phrases of the caption (PAPERS.md §2.3), as the file
    gives them (caption records with a `phrases` field; other files have none): each an
    object, (object, attribute) or (subject, relation, object), stored as one string of its
    1-3 words joined by PHRASE_SEPARATOR (a flat tuple of text is what the stored schema
    holds as it holds VQA's answers); `phrase_tuples` gives them as tuples of words."""

    image_id: str
    caption: str
    caption_index: int
    image_path: str = ''
    image: bytes = b''
    phrases: tuple[str, ...] = ()

    @property
    def phrase_tuples(self) -> tuple[tuple[str, ...], ...]:
        return tuple(tuple(phrase.split(PHRASE_SEPARATOR)) for phrase in self.phrases)


@dataclasses.dataclass(frozen=True)
class VqaRecord(_OfOneImage):
    """One VQA v2 question with its annotation. Test splits have no annotation: the answer
    fields are empty. `answers` are the ten annotators' answers as written (not normalised)."""

    question_id: str
    image_id: str
    question: str
    question_type: str = ''
    answer_type: str = ''
    multiple_choice_answer: str = ''
    answers: tuple[str, ...] = ()
    answer_confidences: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class GqaRecord(_OfOneImage):
    """One GQA balanced question (one exact answer; empty in the hidden test split)."""

    question_id: str
    image_id: str
    question: str
    answer: str = ''
    structural: str = ''


# NLVR2 labels as stored: true, false, and hidden (unlabelled test splits).
NLVR2_TRUE, NLVR2_FALSE, NLVR2_HIDDEN = 1, 0, -1


@dataclasses.dataclass(frozen=True)
class Nlvr2Record:
    """One NLVR2 statement about an image pair; `label` is 1 (true), 0 (false) or -1 (hidden)."""

    identifier: str
    sentence: str
    label: int
    left_image_id: str
    right_image_id: str

    @property
    def image_ids(self) -> tuple[str, ...]:
        return (self.left_image_id, self.right_image_id)


Record = RegionRecord | ImageRecord | CaptionRecord | VqaRecord | GqaRecord | Nlvr2Record

# The record type of every built dataset, by dataset name.
RECORD_TYPES: dict[str, type] = {
    'region_tsv': RegionRecord,
    'region_npz': RegionRecord,
    'image_files': ImageRecord,
    'coco_captions': CaptionRecord,
    'caption_records': CaptionRecord,
    'karpathy': CaptionRecord,
    'vqa_v2': VqaRecord,
    'gqa': GqaRecord,
    'nlvr2': Nlvr2Record,
}


def to_stored(record: Record) -> dict[str, Any]:
    """The record as the dict tfds encodes: tuples as lists, bytes as a uint8 array."""
    out = {}
    for field in dataclasses.fields(record):
        value = getattr(record, field.name)
        if isinstance(value, bytes):
            value = np.frombuffer(value, np.uint8)
        elif isinstance(value, tuple):
            value = list(value)
        out[field.name] = value
    return out


def from_stored(record_type: type, stored: dict[str, Any]) -> Record:
    """A record from what tfds decodes (text as bytes, sequences and bytes as arrays)."""
    values = {}
    for field in dataclasses.fields(record_type):
        value = stored[field.name]
        kind = _KINDS.get(field.type)
        if kind is str:
            value = value.decode('utf-8')
        elif kind is int:
            value = int(value)
        elif kind is bytes:
            value = np.asarray(value, np.uint8).tobytes()
        elif kind is tuple:
            value = tuple(v.decode('utf-8') for v in value)
        values[field.name] = value
    return record_type(**values)


# Field annotations (strings, under `from __future__ import annotations`) -> how to decode.
_KINDS: dict[str, type] = {
    'str': str,
    'int': int,
    'bytes': bytes,
    'tuple[str, ...]': tuple,
    'np.ndarray': np.ndarray,
}
