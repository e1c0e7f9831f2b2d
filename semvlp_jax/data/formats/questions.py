"""Questions and statements: VQA v2 (questions + annotations), GQA balanced questions and NLVR2
statements -> `VqaRecord`, `GqaRecord`, `Nlvr2Record`."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from semvlp_jax.data import records
from semvlp_jax.data.formats.checks import (
    BAD_LABEL,
    DUPLICATE_ID,
    EMPTY_QUESTION,
    EMPTY_SENTENCE,
    MALFORMED_JSON,
    MALFORMED_RECORD,
    BadInput,
    InputError,
    OnBad,
    _field,
    _files_by_split,
    _guarded,
    _joined,
    _optional_text,
    _Problem,
    _text,
    _top_level,
    load_json,
    split_name,
    stop,
)
from semvlp_jax.data.image_index import ImageIndex
from semvlp_jax.data.records import GqaRecord, Nlvr2Record, VqaRecord
from semvlp_jax.evaluators.errors import is_json_int

# VQA v2 file subtypes -> tfds split names (others are sanitised file subtypes).
VQA_SPLITS = {
    'train2014': 'train',
    'val2014': 'val',
    'test2015': 'test',
    'test-dev2015': 'test_dev',
}
VQA_ANSWERS = 10  # annotators per question
NLVR2_LABELS = {
    'True': records.NLVR2_TRUE,
    'False': records.NLVR2_FALSE,
    True: records.NLVR2_TRUE,
    False: records.NLVR2_FALSE,
}

_NLVR2_IDENTIFIER = re.compile(r'^([A-Za-z0-9_]+-\d+-\d+)-\d+$')


# ---------------------------------------------------------------- VQA v2


def vqa_files(manual_dir: Path) -> dict[str, tuple[Path, Path | None]]:
    """Official VQA v2 files -> {split: (questions, annotations or None for test splits)}."""
    pattern = re.compile(r'^v2_OpenEnded_mscoco_(.+)_questions\.json$')
    files: dict[str, tuple[Path, Path | None]] = {}
    subtypes = set()
    for file in sorted(manual_dir.glob('v2_OpenEnded_mscoco_*_questions.json')):
        subtype = pattern.match(file.name).group(1)
        subtypes.add(subtype)
        annotations = manual_dir / f'v2_mscoco_{subtype}_annotations.json'
        split = VQA_SPLITS.get(subtype, split_name(subtype))
        files[split] = (file, annotations if annotations.is_file() else None)
    for file in sorted(manual_dir.glob('v2_mscoco_*_annotations.json')):
        subtype = file.name.removeprefix('v2_mscoco_').removesuffix('_annotations.json')
        if subtype not in subtypes:
            raise InputError(
                f'{file} has no questions file v2_OpenEnded_mscoco_{subtype}_questions.json '
                f'beside it'
            )
    if not files:
        raise InputError(
            f'no VQA v2 questions files (v2_OpenEnded_mscoco_<split>_questions.json) in '
            f'{manual_dir}'
        )
    return files


def read_vqa(
    questions_path: Path,
    annotations_path: Path | None,
    *,
    on_bad: OnBad = stop,
    image_index: ImageIndex | None = None,
) -> Iterator[tuple[str, VqaRecord]]:
    """One record per question, in file order, joined with its annotation when the split has
    annotations (then a question without one is bad, and so is an unused annotation)."""
    questions = _top_level(questions_path, load_json(questions_path), list, 'questions')
    annotations: dict[int, tuple[int, dict]] = {}
    if annotations_path is not None:
        entries = _top_level(annotations_path, load_json(annotations_path), list, 'annotations')
        for j, entry in enumerate(entries):
            _guarded(
                annotations_path,
                f'annotations[{j}]',
                on_bad,
                lambda e=entry, k=j: _index_annotation(e, k, annotations),
            )
    asked: set[int] = set()  # ids of every question entry so far, good or bad
    for i, question in enumerate(questions):
        where, qid = f'questions[{i}]', None
        if isinstance(question, dict) and is_json_int(question.get('question_id')):
            qid = question['question_id']
            where = f'question {qid}'
        record = _guarded(
            questions_path,
            where,
            on_bad,
            lambda q=question: _vqa_question(q, asked, image_index),
        )
        if qid is not None:
            asked.add(qid)
        if record is not None and annotations_path is not None:
            annotation = annotations.pop(qid, None)
            if annotation is None:
                detail = f'no annotation in {annotations_path.name}'
                on_bad(BadInput(questions_path, where, MALFORMED_RECORD, detail))
                continue
            record = _guarded(
                annotations_path,
                f'annotations[{annotation[0]}] (question {qid})',
                on_bad,
                lambda r=record, a=annotation[1]: _vqa_answers(r, a),
            )
        if record is not None:
            yield record.question_id, record
    for qid, (j, _) in annotations.items():
        if qid not in asked:
            on_bad(
                BadInput(
                    annotations_path,
                    f'annotations[{j}] (question {qid})',
                    MALFORMED_RECORD,
                    f'no question {qid} in {questions_path.name}',
                )
            )


def _index_annotation(entry: Any, position: int, annotations: dict) -> None:
    qid = _field(entry, 'question_id', int)
    if qid in annotations:
        raise _Problem(DUPLICATE_ID, f'question {qid} already has an annotation')
    annotations[qid] = (position, entry)


def _vqa_question(question: Any, asked: set[int], image_index: ImageIndex | None) -> VqaRecord:
    """The question without answers (what a test split's record is)."""
    qid = _field(question, 'question_id', int)
    if qid in asked:
        raise _Problem(DUPLICATE_ID, f'question {qid} is listed twice')
    image_id = _field(question, 'image_id', int)
    text = _text(_field(question, 'question', str), EMPTY_QUESTION, 'question')
    _joined(image_index, str(image_id))
    return VqaRecord(question_id=str(qid), image_id=str(image_id), question=text)


def _vqa_answers(record: VqaRecord, annotation: Any) -> VqaRecord:
    """`record` with the answers of its annotation."""
    image_id = _field(annotation, 'image_id', int)
    if str(image_id) != record.image_id:
        raise _Problem(
            MALFORMED_RECORD,
            f'annotation is for image {image_id}, the question for image {record.image_id}',
        )
    answers = _field(annotation, 'answers', list)
    if len(answers) != VQA_ANSWERS:
        raise _Problem(MALFORMED_RECORD, f'{len(answers)} answers, expected {VQA_ANSWERS}')
    return dataclasses.replace(
        record,
        question_type=_field(annotation, 'question_type', str),
        answer_type=_field(annotation, 'answer_type', str),
        multiple_choice_answer=_field(annotation, 'multiple_choice_answer', str),
        answers=tuple(_field(answer, 'answer', str) for answer in answers),
        # The official field ('yes' / 'maybe' / 'no'); absent from some re-exported files.
        answer_confidences=tuple(
            _field(answer, 'answer_confidence', str, optional=True) or '' for answer in answers
        ),
    )


# ---------------------------------------------------------------- GQA


def gqa_files(manual_dir: Path) -> dict[str, Path]:
    """`<split>_balanced_questions.json` -> {split: file}."""
    return _files_by_split(
        manual_dir.glob('*_balanced_questions.json'),
        lambda file: file.name.removesuffix('_balanced_questions.json'),
        f'no GQA <split>_balanced_questions.json files in {manual_dir}',
    )


def read_gqa(
    path: Path, *, on_bad: OnBad = stop, image_index: ImageIndex | None = None
) -> Iterator[tuple[str, GqaRecord]]:
    """`{qid: {imageId, question, answer, types: {structural, ...}}}`: one record per question."""
    questions = _top_level(path, load_json(path), dict)
    for qid, question in questions.items():
        record = _guarded(
            path,
            f'question {qid}',
            on_bad,
            lambda q=qid, v=question: _gqa_question(q, v, image_index),
        )
        if record is not None:
            yield qid, record


def _gqa_question(qid: str, question: Any, image_index: ImageIndex | None) -> GqaRecord:
    image_id = _field(question, 'imageId', str)
    if not image_id.strip():
        raise _Problem(MALFORMED_RECORD, 'imageId is blank')
    text = _text(_field(question, 'question', str), EMPTY_QUESTION, 'question')
    types = _field(question, 'types', dict, optional=True) or {}
    record = GqaRecord(
        question_id=qid,
        image_id=image_id,
        question=text,
        answer=_optional_text(question, 'answer'),
        structural=_optional_text(types, 'structural'),
    )
    _joined(image_index, image_id)
    return record


# ---------------------------------------------------------------- NLVR2


def nlvr2_files(manual_dir: Path) -> dict[str, Path]:
    """`*.json` / `*.jsonl` (one JSON object per line) -> {sanitised stem: file}."""
    return _files_by_split(
        [*manual_dir.glob('*.json'), *manual_dir.glob('*.jsonl')],
        lambda file: file.stem,
        f'no NLVR2 *.json / *.jsonl files in {manual_dir}',
    )


def read_nlvr2(
    path: Path, *, on_bad: OnBad = stop, image_index: ImageIndex | None = None
) -> Iterator[tuple[str, Nlvr2Record]]:
    """One record per line (blank lines hold none); `where` is the 1-based line."""
    seen: set[str] = set()
    with open(path, encoding='utf-8') as file:
        try:
            for line_number, line in enumerate(file, 1):
                if not line.strip():
                    continue
                record = _guarded(
                    path, line_number, on_bad, lambda t=line: _nlvr2_record(t, seen, image_index)
                )
                if record is not None:
                    yield record.identifier, record
        except UnicodeDecodeError:
            raise BadInput(path, f'byte {file.tell()}', MALFORMED_JSON, 'not UTF-8 text') from None


def _nlvr2_record(line: str, seen: set[str], image_index: ImageIndex | None) -> Nlvr2Record:
    try:
        entry = json.loads(line)
    except json.JSONDecodeError as error:
        raise _Problem(MALFORMED_JSON, f'column {error.colno}: {error.msg}') from None
    identifier = _field(entry, 'identifier', str)
    match = _NLVR2_IDENTIFIER.match(identifier)
    if match is None:
        raise _Problem(
            MALFORMED_RECORD, f'identifier {identifier!r} is not <split>-<set>-<pair>-<sentence>'
        )
    sentence = _text(_field(entry, 'sentence', str), EMPTY_SENTENCE, 'sentence')
    label = records.NLVR2_HIDDEN  # hidden test labels are absent
    if 'label' in entry:
        raw = entry['label']
        label = NLVR2_LABELS.get(raw) if isinstance(raw, str | bool) else None
        if label is None:
            raise _Problem(BAD_LABEL, f'label is {raw!r}, expected "True" or "False"')
    if identifier in seen:
        raise _Problem(DUPLICATE_ID, f'identifier {identifier!r} is listed twice')
    seen.add(identifier)
    left, right = f'{match.group(1)}-img0', f'{match.group(1)}-img1'
    _joined(image_index, left)
    _joined(image_index, right)
    return Nlvr2Record(
        identifier=identifier,
        sentence=sentence,
        label=label,
        left_image_id=left,
        right_image_id=right,
    )
