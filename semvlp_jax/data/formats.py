"""Readers and validators of the raw files vision-language users already have (no tfds here).

Each reader is a generator of `(key, record)`: `record` holds exactly the fields of the dataset's
schema in `builders.py`. A problem with one record becomes a `BadInput` handed to `on_bad`, which
either raises it (the default, `stop`: the build ends at the first bad record) or counts it and
returns (the record is skipped). A file that cannot be read at all (not JSON, wrong top-level
type) raises `BadInput` directly: none of its records can be trusted, so there is nothing to skip
to. Which files form which split is decided by the `*_files(manual_dir)` functions, which raise
`InputError` when the files a dataset needs are not there.
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import json
import re
import sys
import zipfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from PIL import Image

from semvlp_jax.data.image_index import ImageIndex

# Kinds of bad input: the fixed set `BadInput.reason` is drawn from (reports count by these).
MALFORMED_JSON = 'malformed JSON'
MALFORMED_RECORD = 'malformed record'
MALFORMED_TSV = 'malformed TSV line'
EMPTY_CAPTION = 'empty caption'
EMPTY_QUESTION = 'empty question'
EMPTY_SENTENCE = 'empty sentence'
BAD_LABEL = 'bad label'
BOX_OUTSIDE_IMAGE = 'box outside image'
NON_FINITE = 'non-finite features'
WRONG_DIMENSION = 'wrong feature dimension'
MISSING_IMAGE_SIZE = 'missing image size'
MISSING_IMAGE = 'missing image'
UNDECODABLE_IMAGE = 'undecodable image'
NO_FEATURES = 'image has no features'
DUPLICATE_ID = 'duplicate id'
REASONS = (
    MALFORMED_JSON,
    MALFORMED_RECORD,
    MALFORMED_TSV,
    EMPTY_CAPTION,
    EMPTY_QUESTION,
    EMPTY_SENTENCE,
    BAD_LABEL,
    BOX_OUTSIDE_IMAGE,
    NON_FINITE,
    WRONG_DIMENSION,
    MISSING_IMAGE_SIZE,
    MISSING_IMAGE,
    UNDECODABLE_IMAGE,
    NO_FEATURES,
    DUPLICATE_ID,
)

# Detectors round box corners to pixels; a corner this far outside the image is still inside.
BOX_TOLERANCE_PX = 0.5
# LXMERT's 10 columns, in file order.
TSV_COLUMNS = (
    'img_id',
    'img_h',
    'img_w',
    'objects_id',
    'objects_conf',
    'attrs_id',
    'attrs_conf',
    'num_boxes',
    'boxes',
    'features',
)
# VQA v2 file subtypes -> tfds split names (others are sanitised file subtypes).
VQA_SPLITS = {
    'train2014': 'train',
    'val2014': 'val',
    'test2015': 'test',
    'test-dev2015': 'test_dev',
}
# Karpathy splits of the file -> tfds split (restval is training data in every paper since).
KARPATHY_SPLITS = {'train': 'train', 'restval': 'train', 'val': 'val', 'test': 'test'}
NLVR2_LABELS = {'True': 1, 'False': 0, True: 1, False: 0}

_INT32 = np.iinfo(np.int32)
_NLVR2_IDENTIFIER = re.compile(r'^([A-Za-z0-9_]+-\d+-\d+)-\d+$')


class BadInput(ValueError):
    """One bad record (or unreadable file): `path`, `where` in it, `reason` (one of `REASONS`)
    and a `detail` for the person fixing it."""

    def __init__(self, path: str | Path, where: int | str, reason: str, detail: str):
        if reason not in REASONS:
            raise ValueError(f'unknown bad-input reason {reason!r}; add it to formats.REASONS')
        self.path = str(path)
        self.where = where
        self.reason = reason
        self.detail = detail
        super().__init__(f'{path}:{where}: {reason}: {detail}')

    def __reduce__(self):  # the default would call __init__ with the message alone
        return BadInput, (self.path, self.where, self.reason, self.detail)


class InputError(ValueError):
    """The files a dataset is built from are missing or ambiguous, or a split has no good
    record; the message says which files were expected."""


OnBad = Callable[[BadInput], None]


def stop(error: BadInput) -> None:
    """The default `on_bad`: the first bad record ends the build."""
    raise error


class _Problem(Exception):
    """What is wrong with a record, before the reader adds the file and the record's place."""

    def __init__(self, reason: str, detail: str, where: int | str | None = None):
        super().__init__(detail)
        self.reason, self.detail, self.where = reason, detail, where


def _guarded(path: Path, where: int | str, on_bad: OnBad, make: Callable[[], Any]) -> Any:
    """`make()`, or None after handing its problem to `on_bad` (which may raise)."""
    try:
        return make()
    except _Problem as problem:
        on_bad(BadInput(path, problem.where or where, problem.reason, problem.detail))
        return None


def split_name(text: str) -> str:
    """A file-derived name as a tfds split name: [A-Za-z0-9_] only."""
    return re.sub(r'[^A-Za-z0-9_]', '_', text)


def load_json(path: Path) -> Any:
    """The parsed file; a file that is not JSON is a `BadInput` naming its line:column."""
    try:
        with open(path, encoding='utf-8') as file:
            return json.load(file)
    except json.JSONDecodeError as error:
        raise BadInput(path, f'{error.lineno}:{error.colno}', MALFORMED_JSON, error.msg) from None
    except UnicodeDecodeError as error:
        raise BadInput(path, f'byte {error.start}', MALFORMED_JSON, 'not UTF-8 text') from None


def _top_level(path: Path, value: Any, kind: type, key: str | None = None) -> Any:
    """The file's top-level value (or `value[key]`), which must be a `kind`."""
    if key is not None:
        if not isinstance(value, dict) or key not in value:
            raise BadInput(
                path, 'top level', MALFORMED_RECORD, f'no {key!r} key: is this the right file?'
            )
        value = value[key]
    if not isinstance(value, kind):
        where = key or 'top level'
        raise BadInput(path, where, MALFORMED_RECORD, f'expected a JSON {_json_type(kind)}')
    return value


def _json_type(kind: type | tuple[type, ...]) -> str:
    names = {dict: 'object', list: 'array', str: 'string', int: 'integer', bool: 'boolean'}
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return ' or '.join(names.get(k, k.__name__) for k in kinds)


def _field(record: Any, key: str, kind: type | tuple[type, ...], *, optional: bool = False):
    """`record[key]`, which must be a `kind` (a missing optional key gives None)."""
    if not isinstance(record, dict):
        raise _Problem(MALFORMED_RECORD, f'expected a JSON object, got {_value_type(record)}')
    if key not in record:
        if optional:
            return None
        raise _Problem(MALFORMED_RECORD, f'missing key {key!r}')
    value = record[key]
    # bool is an int subclass, but `true` is never an id.
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _kinds(kind)):
        raise _Problem(
            MALFORMED_RECORD, f'{key!r} is {_value_type(value)}, expected {_json_type(kind)}'
        )
    return value


def _kinds(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _value_type(value: Any) -> str:
    return 'null' if value is None else _json_type(type(value))


def _text(value: str, empty_reason: str, what: str) -> str:
    """`value` stripped; blank text is `empty_reason`, text tfds cannot encode is malformed."""
    try:
        value.encode('utf-8')
    except UnicodeEncodeError as error:
        raise _Problem(MALFORMED_RECORD, f'{what} is not valid Unicode ({error.reason})') from None
    value = value.strip()
    if not value:
        raise _Problem(empty_reason, f'{what} is blank')
    return value


def _optional_text(record: dict, key: str) -> str:
    value = _field(record, key, str, optional=True)
    return '' if value is None else value.strip()


def _joined(image_index: ImageIndex | None, image_id: str) -> None:
    if image_index is not None and image_index.lookup(image_id) is None:
        raise _Problem(NO_FEATURES, image_index.why_missing(image_id))


def _stem(image_path: str) -> str:
    return PurePosixPath(image_path).stem


# ---------------------------------------------------------------- region features


class RegionChecks:
    """Checks that span records of a region dataset: one feature dimension, each id once.

    `feature_dim=None` takes the dimension of the first good record."""

    def __init__(self, feature_dim: int | None = None):
        self.feature_dim = feature_dim
        self._dim_source = 'as asked' if feature_dim is not None else 'as the first good record'
        self._seen: set[str] = set()

    def admit(self, image_id: str, dim: int) -> None:
        """Accepts a record that passed every other check, or raises its problem."""
        if self.feature_dim is not None and dim != self.feature_dim:
            raise _Problem(
                WRONG_DIMENSION,
                f'image {image_id!r} has {dim}-d features, expected {self.feature_dim} '
                f'({self._dim_source})',
            )
        if image_id in self._seen:
            raise _Problem(DUPLICATE_ID, f'image {image_id!r} already has features')
        self.feature_dim = dim
        self._seen.add(image_id)


def region_record(
    checks: RegionChecks,
    image_id: str,
    height: int,
    width: int,
    boxes: np.ndarray,
    features: np.ndarray,
    objects: np.ndarray | None,
    attributes: np.ndarray | None,
) -> dict[str, Any]:
    """The schema's record from pixel boxes; raises `_Problem` for what a record may not be."""
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise _Problem(MALFORMED_RECORD, f'boxes have shape {boxes.shape}, expected [N, 4]')
    count = len(boxes)
    if features.ndim != 2 or features.shape[0] != count or features.shape[1] == 0:
        raise _Problem(
            MALFORMED_RECORD, f'features have shape {features.shape}, expected [{count}, D]'
        )
    if count == 0:
        raise _Problem(MALFORMED_RECORD, 'no regions: a record needs at least one box')
    labels = {}
    for name, values in (('objects', objects), ('attributes', attributes)):
        if values is None:
            labels[name] = np.full(count, -1, np.int32)
            continue
        if values.shape != (count,):
            raise _Problem(
                MALFORMED_RECORD, f'{name} have shape {values.shape}, expected [{count}]'
            )
        if values.min() < _INT32.min or values.max() > _INT32.max:
            raise _Problem(MALFORMED_RECORD, f'{name} hold labels outside int32')
        labels[name] = values.astype(np.int32)
    # Before the bounds check: NaN compares False, so it would pass it.
    for name, values in (('features', features), ('boxes', boxes)):
        bad = ~np.isfinite(values)
        if bad.any():
            row = int(np.argwhere(bad)[0][0])
            raise _Problem(NON_FINITE, f'{name} of region {row} hold NaN or inf')
    x1, y1, x2, y2 = boxes.T
    tol = BOX_TOLERANCE_PX
    outside = (x1 < -tol) | (y1 < -tol) | (x2 > width + tol) | (y2 > height + tol)
    outside |= (x2 < x1 - tol) | (y2 < y1 - tol)
    if outside.any():
        row = int(np.argmax(outside))
        raise _Problem(
            BOX_OUTSIDE_IMAGE,
            f'region {row} box {boxes[row].tolist()} (x1, y1, x2, y2) is not inside the '
            f'{width}x{height} image',
        )
    checks.admit(image_id, features.shape[1])
    scale = np.array([width, height, width, height], np.float64)
    # Clipping only moves corners within the rounding tolerance back onto the image edge.
    normalised = np.clip(boxes.astype(np.float64) / scale, 0.0, 1.0).astype(np.float32)
    return {
        'image_id': image_id,
        'image_height': np.int32(height),
        'image_width': np.int32(width),
        'features': features.astype(np.float32),
        'boxes': normalised,
        **labels,
    }


def _files_by_split(
    found: Iterable[Path], split_of: Callable[[Path], str], none_found: str
) -> dict[str, Path]:
    """{split name: file}, split names sanitised by `split_name`; two files that become one split
    are an error rather than one silently replacing the other."""
    files: dict[str, Path] = {}
    for file in sorted(found):
        split = split_name(split_of(file))
        if split in files:
            raise InputError(f'{files[split]} and {file} both become split {split!r}')
        files[split] = file
    if not files:
        raise InputError(none_found)
    return files


def region_tsv_files(manual_dir: Path) -> list[Path]:
    files = sorted(manual_dir.glob('*.tsv'))
    if not files:
        raise InputError(f'no *.tsv region-feature files in {manual_dir}')
    return files


def read_region_tsv(
    path: Path, *, checks: RegionChecks, on_bad: OnBad = stop
) -> Iterator[tuple[str, dict]]:
    """Records of an LXMERT 10-column TSV, in file order; `where` is the 1-based line."""
    # Feature columns of one line run to megabytes; csv refuses fields over 128 KiB by default.
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    with open(path, newline='', encoding='utf-8') as file:
        rows = csv.reader(file, delimiter='\t', quoting=csv.QUOTE_NONE)
        try:
            for row in rows:
                if not row:  # a blank line holds no record
                    continue
                line = rows.line_num
                record = _guarded(path, line, on_bad, lambda row=row: _tsv_record(row, checks))
                if record is not None:
                    yield record['image_id'], record
        except (csv.Error, UnicodeDecodeError) as error:
            # The reader cannot resynchronise after these, so no later line can be trusted.
            raise BadInput(path, rows.line_num + 1, MALFORMED_TSV, str(error)) from None


def _tsv_record(row: list[str], checks: RegionChecks) -> dict:
    if len(row) != len(TSV_COLUMNS):
        raise _Problem(
            MALFORMED_TSV,
            f'{len(row)} tab-separated columns, expected {len(TSV_COLUMNS)} '
            f'({", ".join(TSV_COLUMNS)})',
        )
    columns = dict(zip(TSV_COLUMNS, row, strict=True))
    image_id = columns['img_id'].strip()
    if not image_id:
        raise _Problem(MALFORMED_TSV, 'img_id is empty')
    height, width = _tsv_size(columns['img_h'], 'img_h'), _tsv_size(columns['img_w'], 'img_w')
    count = _tsv_int(columns['num_boxes'], 'num_boxes')
    if count <= 0:
        raise _Problem(MALFORMED_TSV, f'num_boxes is {count}: a record needs at least one box')
    objects = _tsv_array(columns, 'objects_id', '<i8', count)
    _tsv_array(columns, 'objects_conf', '<f4', count)
    attributes = _tsv_array(columns, 'attrs_id', '<i8', count)
    _tsv_array(columns, 'attrs_conf', '<f4', count)
    boxes = _tsv_array(columns, 'boxes', '<f4', count * 4).reshape(count, 4)
    features = _tsv_buffer(columns, 'features')
    if not features or len(features) % (4 * count):
        raise _Problem(
            MALFORMED_TSV,
            f'features hold {len(features)} bytes, not a multiple of 4 x num_boxes ({count})',
        )
    features = np.frombuffer(features, '<f4').reshape(count, -1)
    return region_record(checks, image_id, height, width, boxes, features, objects, attributes)


def _tsv_int(text: str, column: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise _Problem(MALFORMED_TSV, f'{column} is {text[:20]!r}, not an integer') from None


def _tsv_size(text: str, column: str) -> int:
    if not text.strip():
        raise _Problem(MISSING_IMAGE_SIZE, f'{column} is empty')
    size = _tsv_int(text, column)
    if size <= 0:
        raise _Problem(MISSING_IMAGE_SIZE, f'{column} is {size}')
    return size


def _tsv_buffer(columns: dict[str, str], column: str) -> bytes:
    try:
        return base64.b64decode(columns[column], validate=True)
    except (binascii.Error, ValueError) as error:
        raise _Problem(MALFORMED_TSV, f'{column} is not base64 ({error})') from None


def _tsv_array(columns: dict[str, str], column: str, dtype: str, size: int) -> np.ndarray:
    buffer = _tsv_buffer(columns, column)
    itemsize = np.dtype(dtype).itemsize
    if len(buffer) != size * itemsize:
        raise _Problem(
            MALFORMED_TSV,
            f'{column} holds {len(buffer)} bytes, expected {size * itemsize} '
            f'({size} x {itemsize}-byte {np.dtype(dtype).name}) for num_boxes',
        )
    return np.frombuffer(buffer, dtype)


def region_npz_files(manual_dir: Path) -> list[Path]:
    files = sorted(manual_dir.rglob('*.npz'))
    if not files:
        raise InputError(f'no *.npz region-feature files under {manual_dir}')
    return files


def read_region_npz(
    path: Path, *, checks: RegionChecks, on_bad: OnBad = stop
) -> Iterator[tuple[str, dict]]:
    """The one record of a per-image .npz (image id = file stem); `where` names the key."""
    record = _guarded(path, 'file', on_bad, lambda: _npz_record(path, checks))
    if record is not None:
        yield record['image_id'], record


def _npz_record(path: Path, checks: RegionChecks) -> dict:
    try:
        # No pickles: an .npz from elsewhere must not run code when it is read.
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise _Problem(MALFORMED_RECORD, f'not a readable .npz ({error})') from None
    for key in ('features', 'boxes'):
        if key not in arrays:
            raise _Problem(MALFORMED_RECORD, f'no {key!r} array (it has {sorted(arrays)})')
    size = {key: _npz_size(arrays, key) for key in ('image_h', 'image_w')}
    numeric = {key: _npz_numeric(arrays, key) for key in ('features', 'boxes')}
    labels = {}
    for key, name in (('objects', 'objects'), ('attrs', 'attributes')):
        values = arrays.get(key)
        if values is not None and not np.issubdtype(values.dtype, np.integer):
            raise _Problem(MALFORMED_RECORD, f'{key!r} is {values.dtype}, expected integers', key)
        labels[name] = values
    return region_record(
        checks,
        path.stem,
        size['image_h'],
        size['image_w'],
        numeric['boxes'],
        numeric['features'],
        labels['objects'],
        labels['attributes'],
    )


def _npz_size(arrays: dict[str, np.ndarray], key: str) -> int:
    if key not in arrays:
        raise _Problem(MISSING_IMAGE_SIZE, f'no {key!r} array: boxes are normalised by it', key)
    value = arrays[key]
    if value.size != 1 or not np.issubdtype(value.dtype, np.number):
        raise _Problem(MALFORMED_RECORD, f'{key!r} is not one number', key)
    size = value.item()
    if not np.isfinite(size) or size <= 0 or size != int(size):
        raise _Problem(MISSING_IMAGE_SIZE, f'{key!r} is {size}', key)
    return int(size)


def _npz_numeric(arrays: dict[str, np.ndarray], key: str) -> np.ndarray:
    value = arrays[key]
    if not (np.issubdtype(value.dtype, np.floating) or np.issubdtype(value.dtype, np.integer)):
        raise _Problem(MALFORMED_RECORD, f'{key!r} is {value.dtype}, expected real numbers', key)
    return value


# ---------------------------------------------------------------- images (captions)


class ImageReader:
    """Encoded image files under `root`; each is fully decoded once, to prove it is whole."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self._problems: dict[str, _Problem | None] = {}

    def __call__(self, image_path: str) -> np.ndarray:
        """The file's bytes as uint8, or `_Problem` (missing image / undecodable image)."""
        file = self.root / image_path
        try:
            data = file.read_bytes()
        except OSError as error:
            raise _Problem(MISSING_IMAGE, f'cannot read {file} ({error.strerror})') from None
        if image_path not in self._problems:  # captions repeat images: decode each once
            self._problems[image_path] = _decode_problem(file, data)
        problem = self._problems[image_path]
        if problem is not None:
            raise problem
        return np.frombuffer(data, np.uint8)


def _decode_problem(file: Path, data: bytes) -> _Problem | None:
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
    # Decoders of arbitrary bytes fail in many ways (OSError, SyntaxError, struct.error, ...).
    except Exception as error:
        return _Problem(UNDECODABLE_IMAGE, f'{file}: {type(error).__name__}: {error}')
    return None


_NO_IMAGE = np.zeros(0, np.uint8)


def _caption_record(
    image_path: str,
    caption: Any,
    index: int,
    image_index: ImageIndex | None,
    images: ImageReader | None,
) -> dict:
    if not isinstance(caption, str):
        raise _Problem(MALFORMED_RECORD, f'caption is {_value_type(caption)}, expected a string')
    image_id = _stem(image_path)
    record = {
        'image_id': image_id,
        'image_path': image_path,
        'caption': _text(caption, EMPTY_CAPTION, 'caption'),
        'caption_index': np.int32(index),
    }
    _joined(image_index, image_id)
    record['image'] = _NO_IMAGE if images is None else images(image_path)
    return record


def _caption_key(record: dict) -> str:
    return f'{record["image_path"]}#{int(record["caption_index"])}'


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
) -> Iterator[tuple[str, dict]]:
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


def _coco_annotation(annotation, counts, file_names, image_dir, image_index, images) -> dict:
    image_id = _field(annotation, 'image_id', int)
    caption = _field(annotation, 'caption', str)
    index = counts.get(image_id, 0)
    counts[image_id] = index + 1
    if image_id not in file_names:
        raise _Problem(MALFORMED_RECORD, f'image_id {image_id} is not among the good images[]')
    image_path = f'{image_dir}/{file_names[image_id]}'
    return _caption_record(image_path, caption, index, image_index, images)


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
) -> Iterator[tuple[str, dict]]:
    """ALBEF/SIMLA `[{"image": path, "caption": str | [str]}]`: one record per caption.

    An image may appear in several entries; `caption_index` counts its captions over the file."""
    entries = _top_level(path, load_json(path), list)
    counts: dict[str, int] = {}
    for i, entry in enumerate(entries):
        parsed = _guarded(path, f'[{i}]', on_bad, lambda e=entry: _caption_entry(e))
        if parsed is None:
            continue
        image_path, captions = parsed
        for j, caption in enumerate(captions):
            where = f'[{i}].caption[{j}]' if isinstance(entry['caption'], list) else f'[{i}]'
            index = counts.get(image_path, 0)
            counts[image_path] = index + 1
            record = _guarded(
                path,
                where,
                on_bad,
                lambda p=image_path, c=caption, k=index: _caption_record(
                    p, c, k, image_index, images
                ),
            )
            if record is not None:
                yield _caption_key(record), record


def _caption_entry(entry: Any) -> tuple[str, list]:
    image_path = _field(entry, 'image', str)
    if not image_path.strip():
        raise _Problem(MALFORMED_RECORD, 'image is blank')
    captions = _field(entry, 'caption', (str, list))
    captions = [captions] if isinstance(captions, str) else captions
    if not captions:
        raise _Problem(EMPTY_CAPTION, 'caption is an empty list')
    return image_path, captions


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
) -> Iterator[tuple[str, dict]]:
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


# ---------------------------------------------------------------- questions and statements


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
) -> Iterator[tuple[str, dict]]:
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
        if isinstance(question, dict) and _is_int(question.get('question_id')):
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
            yield str(qid), record
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


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _index_annotation(entry: Any, position: int, annotations: dict) -> None:
    qid = _field(entry, 'question_id', int)
    if qid in annotations:
        raise _Problem(DUPLICATE_ID, f'question {qid} already has an annotation')
    annotations[qid] = (position, entry)


def _vqa_question(question: Any, asked: set[int], image_index: ImageIndex | None) -> dict:
    qid = _field(question, 'question_id', int)
    if qid in asked:
        raise _Problem(DUPLICATE_ID, f'question {qid} is listed twice')
    image_id = _field(question, 'image_id', int)
    text = _text(_field(question, 'question', str), EMPTY_QUESTION, 'question')
    _joined(image_index, str(image_id))
    return {
        'question_id': np.int64(qid),
        'image_id': str(image_id),
        'question': text,
        'question_type': '',
        'answer_type': '',
        'multiple_choice_answer': '',
        'answers': [],
    }


def _vqa_answers(record: dict, annotation: Any) -> dict:
    """`record` with the answers of its annotation."""
    image_id = _field(annotation, 'image_id', int)
    if str(image_id) != record['image_id']:
        raise _Problem(
            MALFORMED_RECORD,
            f'annotation is for image {image_id}, the question for image {record["image_id"]}',
        )
    answers = _field(annotation, 'answers', list)
    if len(answers) != 10:
        raise _Problem(MALFORMED_RECORD, f'{len(answers)} answers, expected 10')
    return {
        **record,
        'question_type': _field(annotation, 'question_type', str),
        'answer_type': _field(annotation, 'answer_type', str),
        'multiple_choice_answer': _field(annotation, 'multiple_choice_answer', str),
        'answers': [_field(answer, 'answer', str) for answer in answers],
    }


def gqa_files(manual_dir: Path) -> dict[str, Path]:
    """`<split>_balanced_questions.json` -> {split: file}."""
    return _files_by_split(
        manual_dir.glob('*_balanced_questions.json'),
        lambda file: file.name.removesuffix('_balanced_questions.json'),
        f'no GQA <split>_balanced_questions.json files in {manual_dir}',
    )


def read_gqa(
    path: Path, *, on_bad: OnBad = stop, image_index: ImageIndex | None = None
) -> Iterator[tuple[str, dict]]:
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


def _gqa_question(qid: str, question: Any, image_index: ImageIndex | None) -> dict:
    image_id = _field(question, 'imageId', str)
    if not image_id.strip():
        raise _Problem(MALFORMED_RECORD, 'imageId is blank')
    text = _text(_field(question, 'question', str), EMPTY_QUESTION, 'question')
    types = _field(question, 'types', dict, optional=True) or {}
    record = {
        'question_id': qid,
        'image_id': image_id,
        'question': text,
        'answer': _optional_text(question, 'answer'),
        'structural': _optional_text(types, 'structural'),
    }
    _joined(image_index, image_id)
    return record


def nlvr2_files(manual_dir: Path) -> dict[str, Path]:
    """`*.json` / `*.jsonl` (one JSON object per line) -> {sanitised stem: file}."""
    return _files_by_split(
        [*manual_dir.glob('*.json'), *manual_dir.glob('*.jsonl')],
        lambda file: file.stem,
        f'no NLVR2 *.json / *.jsonl files in {manual_dir}',
    )


def read_nlvr2(
    path: Path, *, on_bad: OnBad = stop, image_index: ImageIndex | None = None
) -> Iterator[tuple[str, dict]]:
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
                    yield record['identifier'], record
        except UnicodeDecodeError:
            raise BadInput(path, f'byte {file.tell()}', MALFORMED_JSON, 'not UTF-8 text') from None


def _nlvr2_record(line: str, seen: set[str], image_index: ImageIndex | None) -> dict:
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
    label = -1  # hidden test labels are absent
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
    return {
        'identifier': identifier,
        'sentence': sentence,
        'label': np.int32(label),
        'left_image_id': left,
        'right_image_id': right,
    }
