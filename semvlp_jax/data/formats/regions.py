"""Region features: LXMERT-style 10-column TSV files and per-image .npz files -> `RegionRecord`."""

from __future__ import annotations

import base64
import binascii
import csv
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from semvlp_jax.data.formats.checks import (
    BOX_OUTSIDE_IMAGE,
    DUPLICATE_ID,
    MALFORMED_RECORD,
    MALFORMED_TSV,
    MISSING_IMAGE_SIZE,
    NON_FINITE,
    WRONG_DIMENSION,
    BadInput,
    InputError,
    OnBad,
    _guarded,
    _Problem,
    stop,
)
from semvlp_jax.data.records import RegionRecord

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

_INT32 = np.iinfo(np.int32)


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
) -> RegionRecord:
    """The record from pixel boxes; raises `_Problem` for what a record may not be."""
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
    return RegionRecord(
        image_id=image_id,
        image_height=int(height),
        image_width=int(width),
        features=features.astype(np.float32),
        boxes=normalised,
        **labels,
    )


# ---------------------------------------------------------------- TSV


def region_tsv_files(manual_dir: Path) -> list[Path]:
    files = sorted(manual_dir.glob('*.tsv'))
    if not files:
        raise InputError(f'no *.tsv region-feature files in {manual_dir}')
    return files


def read_region_tsv(
    path: Path, *, checks: RegionChecks, on_bad: OnBad = stop
) -> Iterator[tuple[str, RegionRecord]]:
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
                    yield record.image_id, record
        except (csv.Error, UnicodeDecodeError) as error:
            # The reader cannot resynchronise after these, so no later line can be trusted.
            raise BadInput(path, rows.line_num + 1, MALFORMED_TSV, str(error)) from None


def _tsv_record(row: list[str], checks: RegionChecks) -> RegionRecord:
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


# ---------------------------------------------------------------- npz


def region_npz_files(manual_dir: Path) -> list[Path]:
    files = sorted(manual_dir.rglob('*.npz'))
    if not files:
        raise InputError(f'no *.npz region-feature files under {manual_dir}')
    return files


def read_region_npz(
    path: Path, *, checks: RegionChecks, on_bad: OnBad = stop
) -> Iterator[tuple[str, RegionRecord]]:
    """The one record of a per-image .npz (image id = file stem); `where` names the key."""
    record = _guarded(path, 'file', on_bad, lambda: _npz_record(path, checks))
    if record is not None:
        yield record.image_id, record


def _npz_record(path: Path, checks: RegionChecks) -> RegionRecord:
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
