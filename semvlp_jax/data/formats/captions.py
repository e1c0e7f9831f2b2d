"""Captions: COCO captions files, ALBEF/SIMLA and MVPTR caption records and Karpathy split
files -> `CaptionRecord`, with the image file itself when an `ImageReader` is given.

Only MVPTR's caption records carry phrases (`phrases`, added by its SPICE parsing script
`tools/phrase_parse.sh`); COCO and Karpathy captions have none."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from semvlp_jax.data.formats.checks import (
    DUPLICATE_ID,
    EMPTY_CAPTION,
    MALFORMED_RECORD,
    BadInput,
    InputError,
    OnBad,
    _field,
    _files_by_split,
    _guarded,
    _joined,
    _Problem,
    _text,
    _top_level,
    _value_type,
    load_json,
    stop,
)
from semvlp_jax.data.formats.images import ImageReader
from semvlp_jax.data.image_index import ImageIndex
from semvlp_jax.data.records import PHRASE_SEPARATOR, CaptionRecord, phrase_text

# Karpathy splits of the file -> tfds split (restval is training data in every paper since).
KARPATHY_SPLITS = {'train': 'train', 'restval': 'train', 'val': 'val', 'test': 'test'}


def _caption_record(
    image_path: str,
    caption: Any,
    index: int,
    image_index: ImageIndex | None,
    images: ImageReader | None,
    *,
    image_id: str | None = None,
    phrases: tuple[str, ...] = (),
) -> CaptionRecord:
    """The record of one caption; its image id is the image file's stem unless given (MVPTR's
    records name an image id and no file)."""
    if not isinstance(caption, str):
        raise _Problem(MALFORMED_RECORD, f'caption is {_value_type(caption)}, expected a string')
    if image_id is None:
        image_id = PurePosixPath(image_path).stem
    text = _text(caption, EMPTY_CAPTION, 'caption')
    _joined(image_index, image_id)
    if images is not None and not image_path:
        raise _Problem(
            MALFORMED_RECORD,
            f"image {image_id!r} has no 'image' path to read its file from (--images); this "
            "entry names only an 'image_id'",
        )
    return CaptionRecord(
        image_id=image_id,
        caption=text,
        caption_index=index,
        image_path=image_path,
        image=b'' if images is None else images(image_path),
        phrases=phrases,
    )


def _image_key(image_path: str, image_id: str) -> str:
    """What an entry's captions are counted and keyed under: the image file, else the id."""
    return image_path or f'id:{image_id}'


def _caption_key(record: CaptionRecord) -> str:
    return f'{_image_key(record.image_path, record.image_id)}#{record.caption_index}'


# ---------------------------------------------------------------- COCO captions


def coco_caption_files(manual_dir: Path) -> dict[str, Path]:
    """`captions_<split>.json` anywhere under `manual_dir` -> {split: file}."""
    return _files_by_split(
        manual_dir.rglob('captions_*.json'),
        lambda file: file.stem.removeprefix('captions_'),
        f'no captions_<split>.json (COCO captions) under {manual_dir}',
    )


def read_coco_captions(
    path: Path,
    *,
    image_dir: str,
    on_bad: OnBad = stop,
    image_index: ImageIndex | None = None,
    images: ImageReader | None = None,
) -> Iterator[tuple[str, CaptionRecord]]:
    """One record per annotation, in file order; images live in `<image_dir>/<file_name>`.

    `caption_index` counts the image's annotations in file order, bad ones included, so it
    names the same caption whatever was skipped."""
    doc = load_json(path)
    image_entries = _top_level(path, doc, list, 'images')
    annotations = _top_level(path, doc, list, 'annotations')
    file_names: dict[int, str] = {}
    listed: set[str] = set()
    for i, entry in enumerate(image_entries):
        _guarded(path, f'images[{i}]', on_bad, lambda e=entry: _coco_image(e, file_names, listed))
    counts: dict[int, int] = {}
    for i, annotation in enumerate(annotations):
        record = _guarded(
            path,
            f'annotations[{i}]',
            on_bad,
            lambda a=annotation: _coco_annotation(
                a, counts, file_names, image_dir, image_index, images
            ),
        )
        if record is not None:
            yield _caption_key(record), record


def _coco_image(entry: Any, file_names: dict[int, str], listed: set[str]) -> None:
    image_id = _field(entry, 'id', int)
    file_name = _field(entry, 'file_name', str)
    if not file_name.strip():
        raise _Problem(MALFORMED_RECORD, 'file_name is blank')
    if image_id in file_names:
        raise _Problem(DUPLICATE_ID, f'image id {image_id} is listed twice')
    if file_name in listed:
        raise _Problem(DUPLICATE_ID, f'file {file_name!r} is listed under two image ids')
    file_names[image_id] = file_name
    listed.add(file_name)


def _coco_annotation(
    annotation, counts, file_names, image_dir, image_index, images
) -> CaptionRecord:
    image_id = _field(annotation, 'image_id', int)
    caption = _field(annotation, 'caption', str)
    index = counts.get(image_id, 0)
    counts[image_id] = index + 1
    if image_id not in file_names:
        raise _Problem(MALFORMED_RECORD, f'image_id {image_id} is not among the good images[]')
    image_path = f'{image_dir}/{file_names[image_id]}'
    return _caption_record(image_path, caption, index, image_index, images)


# ---------------------------------------------------------------- ALBEF / MVPTR caption records


def caption_record_files(manual_dir: Path) -> dict[str, Path]:
    """Every `*.json` directly in `manual_dir` -> {sanitised stem: file}."""
    return _files_by_split(
        manual_dir.glob('*.json'),
        lambda file: file.stem,
        f'no *.json caption-record files in {manual_dir}',
    )


def read_caption_records(
    path: Path,
    *,
    on_bad: OnBad = stop,
    image_index: ImageIndex | None = None,
    images: ImageReader | None = None,
) -> Iterator[tuple[str, CaptionRecord]]:
    """Caption records, one record per caption: ALBEF/SIMLA `[{"image": path, "caption": str |
    [str]}]`, or MVPTR's `[{"image_id": id, "text": str, "phrases": [[word, ...], ...], ...}]`.

    An entry's image is its `image` file (the image id is the file's stem), else its
    `image_id` (a string or an integer); its text is `caption`, else `text`. `phrases`
    (optional) are MVPTR's scene-graph phrases of the entry's one caption, each a list of 1-3
    words: [object], [object, attribute] or [subject, relation, object]; words are stripped of
    surrounding whitespace. Other keys (MVPTR's `label`, ...) are ignored. An image may appear
    in several entries; `caption_index` counts its captions over the file."""
    entries = _top_level(path, load_json(path), list)
    counts: dict[str, int] = {}
    for i, entry in enumerate(entries):
        parsed = _guarded(path, f'[{i}]', on_bad, lambda e=entry, w=i: _caption_entry(e, w))
        if parsed is None:
            continue
        image_path, image_id, text_key, captions, phrases = parsed
        key = _image_key(image_path, image_id)
        for j, caption in enumerate(captions):
            where = f'[{i}].{text_key}[{j}]' if isinstance(entry[text_key], list) else f'[{i}]'
            index = counts.get(key, 0)
            counts[key] = index + 1
            record = _guarded(
                path,
                where,
                on_bad,
                lambda p=image_path, c=caption, k=index, d=image_id, s=phrases: _caption_record(
                    p, c, k, image_index, images, image_id=d, phrases=s
                ),
            )
            if record is not None:
                yield _caption_key(record), record


def _caption_entry(entry: Any, position: int) -> tuple[str, str, str, list, tuple[str, ...]]:
    """(image path or '', image id, the text's key, captions, stored phrases) of one entry."""
    if isinstance(entry, dict) and 'image' not in entry and 'image_id' in entry:
        image_path = ''
        image_id = _field(entry, 'image_id', (str, int))
        image_id = str(image_id).strip()
        if not image_id:
            raise _Problem(MALFORMED_RECORD, 'image_id is blank')
    else:
        if isinstance(entry, dict) and 'image' not in entry:
            raise _Problem(MALFORMED_RECORD, "missing key 'image' (or MVPTR's 'image_id')")
        image_path = _field(entry, 'image', str)
        if not image_path.strip():
            raise _Problem(MALFORMED_RECORD, 'image is blank')
        image_id = PurePosixPath(image_path).stem
    if 'caption' in entry and 'text' in entry:
        raise _Problem(MALFORMED_RECORD, "has both 'caption' and 'text': which is the caption?")
    text_key = 'text' if 'text' in entry else 'caption'
    captions = _field(entry, text_key, (str, list))
    captions = [captions] if isinstance(captions, str) else captions
    if not captions:
        raise _Problem(EMPTY_CAPTION, f'{text_key} is an empty list')
    phrases = _field(entry, 'phrases', list, optional=True)
    if phrases is None:
        return image_path, image_id, text_key, captions, ()
    if len(captions) > 1:
        raise _Problem(
            MALFORMED_RECORD,
            f"image {image_id!r}: 'phrases' are one caption's, but {text_key!r} lists "
            f'{len(captions)} captions',
        )
    stored = tuple(
        _phrase(phrase, image_id, f'[{position}].phrases[{j}]') for j, phrase in enumerate(phrases)
    )
    return image_path, image_id, text_key, captions, stored


def _phrase(phrase: Any, image_id: str, where: str) -> str:
    """One MVPTR phrase (a list of 1-3 non-blank words) as `CaptionRecord.phrases` stores it."""

    def problem(what: str) -> _Problem:
        return _Problem(MALFORMED_RECORD, f'image {image_id!r}: phrase {what}', where)

    if not isinstance(phrase, list):
        raise problem(f'is {_value_type(phrase)}, expected an array of 1-3 words')
    if not 1 <= len(phrase) <= 3:
        raise problem(
            f'has {len(phrase)} words, expected 1-3 ([object], [object, attribute] or '
            '[subject, relation, object])'
        )
    words = []
    for k, word in enumerate(phrase):
        if not isinstance(word, str):
            raise problem(f'word {k} is {_value_type(word)}, expected a string')
        if PHRASE_SEPARATOR in word:
            raise problem(f'word {k} {word!r} holds the phrase separator U+001F')
        try:
            word.encode('utf-8')
        except UnicodeEncodeError as error:
            raise problem(f'word {k} is not valid Unicode ({error.reason})') from None
        if not word.strip():
            raise problem(f'word {k} is blank')
        words.append(word.strip())
    return phrase_text(words)


# ---------------------------------------------------------------- Karpathy


def karpathy_file(manual_dir: Path) -> Path:
    files = sorted(manual_dir.glob('dataset_*.json'))
    if len(files) != 1:
        found = ', '.join(f.name for f in files) or 'none'
        raise InputError(
            f'expected exactly one Karpathy split file dataset_*.json in {manual_dir}, '
            f'found {found}'
        )
    return files[0]


def read_karpathy(
    path: Path,
    *,
    split: str,
    on_bad: OnBad = stop,
    image_index: ImageIndex | None = None,
    images: ImageReader | None = None,
) -> Iterator[tuple[str, CaptionRecord]]:
    """Captions of the images whose Karpathy split maps to `split` (train, val or test).

    tfds reads the file once per split; an entry whose own split is unusable belongs to none,
    so it is reported only in the `train` pass (once, not three times)."""
    entries = _top_level(path, load_json(path), list, 'images')
    seen: set[str] = set()
    for i, entry in enumerate(entries):
        where = f'images[{i}]'
        # Everything but the split is checked in the entry's own pass only.
        try:
            target = KARPATHY_SPLITS.get(_field(entry, 'split', str))
            if target is None:
                raise _Problem(
                    MALFORMED_RECORD,
                    f'split {entry["split"]!r} is not one of {", ".join(KARPATHY_SPLITS)}',
                )
        except _Problem as problem:
            if split == 'train':
                on_bad(BadInput(path, where, problem.reason, problem.detail))
            continue
        # Entries of other splits still claim their image, so a duplicate across splits is
        # found (in the pass of the later entry); their problems are their own pass's to report.
        report = on_bad if target == split else _ignore
        parsed = _guarded(path, where, report, lambda e=entry: _karpathy_entry(e, seen))
        if parsed is None or target != split:
            continue
        image_path, sentences = parsed
        for j, sentence in enumerate(sentences):
            record = _guarded(
                path,
                f'{where}.sentences[{j}]',
                on_bad,
                lambda p=image_path, s=sentence, k=j: _caption_record(
                    p, _field(s, 'raw', str), k, image_index, images
                ),
            )
            if record is not None:
                yield _caption_key(record), record


def _ignore(error: BadInput) -> None:
    """For entries of other splits: their own pass reports them."""


def _karpathy_entry(entry: dict, seen: set[str]) -> tuple[str, list]:
    filename = _field(entry, 'filename', str)
    if not filename.strip():
        raise _Problem(MALFORMED_RECORD, 'filename is blank')
    filepath = _field(entry, 'filepath', str, optional=True)
    image_path = f'{filepath}/{filename}' if filepath else filename
    sentences = _field(entry, 'sentences', list)
    if image_path in seen:
        raise _Problem(DUPLICATE_ID, f'image {image_path!r} is listed twice')
    seen.add(image_path)
    return image_path, sentences
