"""Encoded image files: the folders of JPEG/PNG files users have (COCO's train2014/, GQA's
images/, NLVR2's train/...) -> `ImageRecord`, and the reader that stores a caption's image.

Every file is decoded in full once when it is read, so a truncated or corrupt file is bad input
at build time (`UNDECODABLE_IMAGE`, naming the file), never a surprise hours into training. An
image's id is its file stem, as bottom-up-attention feature files key their images; two files
with one stem (`a/x.jpg`, `b/x.png`) are `DUPLICATE_ID`: text records could not say which.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

from PIL import Image

from semvlp_jax.data.formats.checks import (
    DUPLICATE_ID,
    MISSING_IMAGE,
    UNDECODABLE_IMAGE,
    InputError,
    OnBad,
    _guarded,
    _Problem,
    stop,
)
from semvlp_jax.data.records import ImageRecord

# File suffixes read as images (lower-cased); PIL decodes each of these formats.
IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.webp', '.bmp')


def image_files(manual_dir: Path) -> list[Path]:
    """Every image file under `manual_dir`, recursively, sorted by path."""
    files = sorted(
        path
        for path in manual_dir.rglob('*')
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()
    )
    if not files:
        raise InputError(f'no image files ({", ".join(IMAGE_SUFFIXES)}) under {manual_dir}')
    return files


def read_image_files(
    root: Path, files: list[Path], *, on_bad: OnBad = stop
) -> Iterator[tuple[str, ImageRecord]]:
    """One record per file of `files` (under `root`), in order; a bad file is handed to
    `on_bad` with `where='file'`."""
    seen: dict[str, Path] = {}
    for path in files:
        record = _guarded(path, 'file', on_bad, lambda p=path: _image_record(root, p, seen))
        if record is not None:
            yield record.image_id, record


def _image_record(root: Path, path: Path, seen: dict[str, Path]) -> ImageRecord:
    image_id = path.stem
    if image_id in seen:
        raise _Problem(DUPLICATE_ID, f'image id {image_id!r} is also the stem of {seen[image_id]}')
    data = _read(path)
    width, height = decoded_size(path, data)
    seen[image_id] = path
    return ImageRecord(
        image_id=image_id,
        image_path=path.relative_to(root).as_posix(),
        image_height=height,
        image_width=width,
        image=data,
    )


def _read(file: Path) -> bytes:
    try:
        return file.read_bytes()
    except OSError as error:
        raise _Problem(MISSING_IMAGE, f'cannot read {file} ({error.strerror})') from None


def decoded_size(file: Path, data: bytes) -> tuple[int, int]:
    """(width, height) after decoding all of `data`; `_Problem` when it does not decode."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return image.size
    # Decoders of arbitrary bytes fail in many ways (OSError, SyntaxError, struct.error, ...).
    except Exception as error:
        raise _Problem(UNDECODABLE_IMAGE, f'{file}: {type(error).__name__}: {error}') from None


class ImageReader:
    """Encoded image files under `root`, for caption records built with `--images`; each is
    fully decoded once, to prove it is whole."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self._problems: dict[str, _Problem | None] = {}

    def __call__(self, image_path: str) -> bytes:
        """The file's bytes, or `_Problem` (missing image / undecodable image)."""
        file = self.root / image_path
        data = _read(file)
        if image_path not in self._problems:  # captions repeat images: decode each once
            try:
                decoded_size(file, data)
                self._problems[image_path] = None
            except _Problem as problem:
                self._problems[image_path] = problem
        problem = self._problems[image_path]
        if problem is not None:
            raise problem
        return data
