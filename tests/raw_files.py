"""Small raw files in exactly the formats users download, for tests of builders and pipelines.

Every writer takes plain Python values, writes the real layout (file names included where the
format fixes them) and returns what it wrote, so a test can compare the built records
(`semvlp_jax.data.records`) with it.
To write a broken file, build the document with the `*_doc` / `*_entry` helpers, break it, and
pass it to `write_json` (or, for line formats, pass raw text lines to the writer).

- regions: `RegionImage.random(...)`, `write_region_tsv(path, images)`, `write_region_npz(dir,
  images)`, `region_tsv_fields(image)`
- captions: `write_coco_captions(path, captions)`, `write_caption_records(path, records)`,
  `write_karpathy(path, images)`
- questions: `write_vqa(dir, subtype, questions, annotations)` with `vqa_question` and
  `vqa_annotation`; `write_gqa(dir, split, questions)` with `gqa_question`
- NLVR2: `write_nlvr2(path, records)` with `nlvr2_record`
- images: `write_image(path, size)` (PNG: lossless, so decoded pixels can be compared)
"""

from __future__ import annotations

import base64
import collections
import dataclasses
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


def write_json(path: str | Path, doc: Any) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc), encoding='utf-8')
    return path


# ---------------------------------------------------------------- region features


@dataclasses.dataclass
class RegionImage:
    """One image's detector output, boxes in pixels (x1, y1, x2, y2)."""

    image_id: str
    height: int
    width: int
    boxes: np.ndarray  # [N, 4] float32
    features: np.ndarray  # [N, D] float32
    objects: np.ndarray | None = None  # [N] int64
    attrs: np.ndarray | None = None  # [N] int64
    objects_conf: np.ndarray | None = None  # [N] float32 (TSV only)
    attrs_conf: np.ndarray | None = None  # [N] float32 (TSV only)

    @classmethod
    def random(
        cls,
        image_id: str,
        num_boxes: int = 3,
        dim: int = 8,
        height: int = 48,
        width: int = 64,
        seed: int = 0,
    ) -> RegionImage:
        rng = np.random.default_rng(seed)
        x = np.sort(rng.uniform(0, width, (num_boxes, 2)), axis=1)
        y = np.sort(rng.uniform(0, height, (num_boxes, 2)), axis=1)
        boxes = np.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], axis=1).astype(np.float32)
        return cls(
            image_id=image_id,
            height=height,
            width=width,
            boxes=boxes,
            features=rng.normal(size=(num_boxes, dim)).astype(np.float32),
            objects=rng.integers(0, 1600, num_boxes).astype(np.int64),
            attrs=rng.integers(0, 400, num_boxes).astype(np.int64),
            objects_conf=rng.uniform(size=num_boxes).astype(np.float32),
            attrs_conf=rng.uniform(size=num_boxes).astype(np.float32),
        )

    @property
    def normalised_boxes(self) -> np.ndarray:
        """What a built dataset stores: boxes / (w, h, w, h)."""
        scale = np.array([self.width, self.height] * 2, np.float32)
        return (self.boxes / scale).astype(np.float32)


def _b64(array: np.ndarray, dtype: str) -> str:
    return base64.b64encode(np.ascontiguousarray(array, dtype=dtype).tobytes()).decode('ascii')


def region_tsv_fields(image: RegionImage) -> list[str]:
    """The 10 LXMERT columns of one image (a test may break one and join them with tabs)."""
    count = len(image.boxes)
    zeros_i, zeros_f = np.zeros(count, np.int64), np.zeros(count, np.float32)

    def pick(value, default):
        return default if value is None else value

    return [
        image.image_id,
        str(image.height),
        str(image.width),
        _b64(pick(image.objects, zeros_i), '<i8'),
        _b64(pick(image.objects_conf, zeros_f), '<f4'),
        _b64(pick(image.attrs, zeros_i), '<i8'),
        _b64(pick(image.attrs_conf, zeros_f), '<f4'),
        str(count),
        _b64(image.boxes, '<f4'),
        _b64(image.features, '<f4'),
    ]


def write_region_tsv(path: str | Path, images: Sequence[RegionImage | str]) -> Path:
    """One line per image, no header; a `str` item is written as it is (a broken line)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [i if isinstance(i, str) else '\t'.join(region_tsv_fields(i)) for i in images]
    path.write_text(''.join(line + '\n' for line in lines), encoding='utf-8')
    return path


def write_region_npz(
    directory: str | Path, images: Sequence[RegionImage], *, omit: Sequence[str] = ()
) -> list[Path]:
    """`<directory>/<image_id>.npz` per image with features, boxes, image_h, image_w and, when
    set, objects and attrs; keys in `omit` are left out (to test a missing key)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for image in images:
        arrays = {
            'features': image.features,
            'boxes': image.boxes,
            'image_h': np.int64(image.height),
            'image_w': np.int64(image.width),
            'objects': image.objects,
            'attrs': image.attrs,
        }
        arrays = {k: v for k, v in arrays.items() if v is not None and k not in omit}
        path = directory / f'{image.image_id}.npz'
        np.savez(path, **arrays)
        paths.append(path)
    return paths


# ---------------------------------------------------------------- images and captions


def write_image(path: str | Path, size: tuple[int, int] = (8, 6), seed: int = 0) -> np.ndarray:
    """A PNG of random RGB pixels, (width, height) = size; returns the pixels [H, W, 3]."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    width, height = size
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format='PNG')
    return pixels


def _trailing_number(name: str, default: int) -> int:
    match = re.search(r'(\d+)$', Path(name).stem)
    return int(match.group(1)) if match else default


def coco_captions_doc(captions: Mapping[str, Sequence[str]]) -> dict:
    """{file_name: [caption, ...]} -> COCO captions JSON. Image ids are the file name's trailing
    number (COCO_val2014_000000000042.jpg -> 42); annotations are interleaved across images
    (every image's first caption, then every second, ...), as in real files they are not grouped
    by image."""
    images = [
        {'id': _trailing_number(name, i), 'file_name': name, 'height': 6, 'width': 8}
        for i, name in enumerate(captions)
    ]
    annotations = []
    for position in range(max((len(c) for c in captions.values()), default=0)):
        for image, texts in zip(images, captions.values(), strict=True):
            if position < len(texts):
                annotations.append(
                    {
                        'image_id': image['id'],
                        'id': len(annotations) + 1,
                        'caption': texts[position],
                    }
                )
    return {
        'info': {'description': 'test'},
        'licenses': [],
        'images': images,
        'annotations': annotations,
    }


def write_coco_captions(path: str | Path, captions: Mapping[str, Sequence[str]]) -> dict:
    """Writes `coco_captions_doc(captions)` (name the file captions_<split>.json)."""
    doc = coco_captions_doc(captions)
    write_json(path, doc)
    return doc


def write_caption_records(
    path: str | Path, records: Sequence[tuple[str, str | Sequence[str]] | dict]
) -> list:
    """ALBEF/SIMLA `[{"image": path, "caption": str | [str]}]` from (image, caption(s)) pairs;
    dict items are written as they are."""
    doc = [r if isinstance(r, dict) else {'image': r[0], 'caption': _listed(r[1])} for r in records]
    write_json(path, doc)
    return doc


def _listed(caption):
    return caption if isinstance(caption, str) else list(caption)


def karpathy_doc(
    images: Sequence[tuple[str, str, Sequence[str]] | tuple[str, str, Sequence[str], str]],
    dataset: str = 'coco',
) -> dict:
    """(filename, split, sentences[, filepath]) per image -> Karpathy split JSON."""
    entries, sentence_id = [], 0
    for image_id, image in enumerate(images):
        filename, split, sentences = image[:3]
        entry = {
            'filename': filename,
            'imgid': image_id,
            'split': split,
            'sentences': [],
            'sentids': [],
        }
        if len(image) > 3:
            entry['filepath'] = image[3]
        for raw in sentences:
            entry['sentences'].append(
                {
                    'tokens': raw.lower().split(),
                    'raw': raw,
                    'imgid': image_id,
                    'sentid': sentence_id,
                }
            )
            entry['sentids'].append(sentence_id)
            sentence_id += 1
        entries.append(entry)
    return {'images': entries, 'dataset': dataset}


def write_karpathy(path: str | Path, images, dataset: str = 'coco') -> dict:
    """Writes `karpathy_doc(images, dataset)` (name the file dataset_<name>.json)."""
    doc = karpathy_doc(images, dataset)
    write_json(path, doc)
    return doc


# ---------------------------------------------------------------- questions and statements


def vqa_question(question_id: int, image_id: int, question: str) -> dict:
    return {'image_id': image_id, 'question': question, 'question_id': question_id}


def vqa_annotation(
    question_id: int,
    image_id: int,
    answers: Sequence[str],
    *,
    question_type: str = 'what color is the',
    answer_type: str = 'other',
    confidences: Sequence[str | None] | None = None,
) -> dict:
    """An official annotation; multiple_choice_answer is the most common of `answers`.

    `confidences` are the answers' `answer_confidence` (default all 'yes'); a None leaves that
    answer's key out."""
    most_common = collections.Counter(answers).most_common(1)
    confidences = ['yes'] * len(answers) if confidences is None else confidences
    entries = []
    for i, (answer, confidence) in enumerate(zip(answers, confidences, strict=True)):
        entry = {'answer': answer, 'answer_confidence': confidence, 'answer_id': i + 1}
        entries.append({k: v for k, v in entry.items() if v is not None})
    return {
        'question_id': question_id,
        'image_id': image_id,
        'question_type': question_type,
        'answer_type': answer_type,
        'multiple_choice_answer': most_common[0][0] if most_common else '',
        'answers': entries,
    }


def write_vqa(
    directory: str | Path,
    subtype: str,
    questions: Sequence[dict],
    annotations: Sequence[dict] | None = None,
) -> tuple[Path, Path | None]:
    """The official pair v2_OpenEnded_mscoco_<subtype>_questions.json and (unless None, as for
    test splits) v2_mscoco_<subtype>_annotations.json."""
    directory = Path(directory)
    questions_path = write_json(
        directory / f'v2_OpenEnded_mscoco_{subtype}_questions.json',
        {
            'info': {},
            'task_type': 'Open-Ended',
            'data_type': 'mscoco',
            'data_subtype': subtype,
            'license': {},
            'questions': list(questions),
        },
    )
    if annotations is None:
        return questions_path, None
    annotations_path = write_json(
        directory / f'v2_mscoco_{subtype}_annotations.json',
        {
            'info': {},
            'data_type': 'mscoco',
            'data_subtype': subtype,
            'license': {},
            'annotations': list(annotations),
        },
    )
    return questions_path, annotations_path


def gqa_question(
    image_id: str, question: str, answer: str | None = None, structural: str | None = 'query'
) -> dict:
    """A balanced-questions entry; None leaves `answer` (test) or `types` out."""
    entry = {
        'imageId': image_id,
        'question': question,
        'isBalanced': True,
        'groups': {'global': None, 'local': '13-floor_white'},
        'entailed': [],
        'equivalent': [],
        'semantic': [],
        'semanticStr': '',
        'annotations': {'question': {}, 'answer': {}, 'fullAnswer': {}},
    }
    if answer is not None:
        entry.update(answer=answer, fullAnswer=f'The answer is {answer}.')
    if structural is not None:
        entry['types'] = {'structural': structural, 'semantic': 'attr', 'detailed': 'weather'}
    return entry


def write_gqa(directory: str | Path, split: str, questions: Mapping[str, dict]) -> Path:
    """`<directory>/<split>_balanced_questions.json` = {question id: entry}."""
    return write_json(Path(directory) / f'{split}_balanced_questions.json', dict(questions))


def nlvr2_record(identifier: str, sentence: str, label: str | None = 'True') -> dict:
    """One NLVR2 line; `label=None` leaves it out (hidden test)."""
    pair = identifier.rsplit('-', 1)[0]
    record = {
        'validation': {},
        'sentence': sentence,
        'left_url': f'http://example.com/{pair}-img0.jpg',
        'writer': '103',
        'synset': 'n02114548',
        'query': 'wolf',
        'identifier': identifier,
        'extra_validations': {},
        'right_url': f'http://example.com/{pair}-img1.jpg',
    }
    if label is not None:
        record['label'] = label
    return record


def write_nlvr2(path: str | Path, records: Sequence[dict | str]) -> Path:
    """One JSON object per line (the NLVR2 .json files are JSON lines); `str` items are
    written as they are."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
    path.write_text(''.join(line + '\n' for line in lines), encoding='utf-8')
    return path
