"""What every reader shares: the kinds of bad input, how a problem is reported, JSON fields and
text checked one at a time, and which files form which split."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

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


# ---------------------------------------------------------------- JSON values


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


def _kinds(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _json_type(kind: type | tuple[type, ...]) -> str:
    names = {dict: 'object', list: 'array', str: 'string', int: 'integer', bool: 'boolean'}
    return ' or '.join(names.get(k, k.__name__) for k in _kinds(kind))


def _value_type(value: Any) -> str:
    return 'null' if value is None else _json_type(type(value))


def _field(record: Any, key: str, kind: type | tuple[type, ...], *, optional: bool = False):
    """`record[key]`, which must be a `kind` (a missing optional key gives None)."""
    if not isinstance(record, dict):
        raise _Problem(MALFORMED_RECORD, f'expected a JSON object, got {_value_type(record)}')
    if key not in record:
        if optional:
            return None
        raise _Problem(MALFORMED_RECORD, f'missing key {key!r}')
    value = record[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _kinds(kind)):
        raise _Problem(
            MALFORMED_RECORD, f'{key!r} is {_value_type(value)}, expected {_json_type(kind)}'
        )
    return value


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
    """Raises NO_FEATURES when an index of region features is given and lacks `image_id`."""
    if image_index is not None and image_index.lookup(image_id) is None:
        raise _Problem(NO_FEATURES, image_index.why_missing(image_id))
