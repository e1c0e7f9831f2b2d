"""Image ids of a region-feature dataset, and how text records find their image in it.

Text files name images in different ways: COCO captions and VQA give the integer `image_id`
(42), while bottom-up-attention feature files are keyed by file stem
(`COCO_val2014_000000000042`); Karpathy and ALBEF records give file names; GQA and NLVR2 give the
stem itself. `ImageIndex.lookup` matches the exact id first and then, for an all-digit id, the
one feature key that ends in that integer after an underscore (or is that integer). A trailing integer shared by two keys
(e.g. the same number in two naming schemes) matches neither: ambiguity is reported, never
resolved by guessing.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

from etils import epath

INDEX_FILE = 'image_ids.txt'  # one id per line, in the order of the dataset's records

# A number that is the whole key or follows its last '_' (COCO_val2014_000000000042); not the
# digits of a name such as NLVR2's train-1-0-img1.
_TRAILING_DIGITS = re.compile(r'(?:^|_)(\d+)$')
_AMBIGUOUS = -1
# How many unknown ids an error lists before it only counts the rest.
_LISTED = 5


class ImageIndex:
    """Record position of each image id of a visual dataset (region features or image files;
    `holds` says which, for messages)."""

    def __init__(self, image_ids: Sequence[str], holds: str = 'region features'):
        self.image_ids = list(image_ids)
        self.holds = holds
        self._exact: dict[str, int] = {}
        self._by_number: dict[int, int] = {}
        for position, image_id in enumerate(self.image_ids):
            if image_id in self._exact:
                raise ValueError(f'image id {image_id!r} appears twice among the {holds}')
            self._exact[image_id] = position
            match = _TRAILING_DIGITS.search(image_id)
            if match:
                number = int(match.group(1))
                seen = self._by_number.get(number)
                self._by_number[number] = position if seen is None else _AMBIGUOUS

    def __len__(self) -> int:
        return len(self.image_ids)

    def __contains__(self, image_id: str) -> bool:
        return self.lookup(image_id) is not None

    def lookup(self, image_id: str) -> int | None:
        """Position of `image_id`'s features, or None when it has none (or is ambiguous)."""
        position = self._exact.get(image_id)
        if position is None and image_id.isdigit():
            position = self._by_number.get(int(image_id))
        return None if position in (None, _AMBIGUOUS) else position

    def why_missing(self, image_id: str) -> str:
        """Explanation for a failed lookup, for error messages."""
        if image_id.isdigit() and self._by_number.get(int(image_id)) == _AMBIGUOUS:
            keys = [k for k in self.image_ids if _number(k) == int(image_id)][:3]
            return f'image id {image_id!r} matches several feature keys ({", ".join(keys)})'
        return f'image id {image_id!r} has no {self.holds}'

    def check_ids(self, image_ids, where: str, missing_from: str) -> None:
        """Raises ValueError when any of `image_ids` (from `where`, e.g. 'vqa_v2:train') is not
        indexed: a question about an image nobody stored is an error, not a blank image.
        `missing_from` ends the message's subject: 'have no features in region_tsv'."""
        missing = sorted({str(i) for i in image_ids if str(i) not in self})
        if missing:
            listed = '; '.join(self.why_missing(i) for i in missing[:_LISTED])
            more = f' (and {len(missing) - _LISTED} more)' if len(missing) > _LISTED else ''
            raise ValueError(f'{where}: {len(missing)} image id(s) {missing_from}: {listed}{more}')

    def write(self, directory: str | os.PathLike) -> epath.Path:
        path = epath.Path(directory) / INDEX_FILE
        path.write_text(''.join(f'{i}\n' for i in self.image_ids), encoding='utf-8')
        return path

    @classmethod
    def read(cls, directory: str | os.PathLike, holds: str = 'region features') -> ImageIndex:
        path = epath.Path(directory) / INDEX_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f'{path} not found: region-feature and image-file datasets are built with '
                '`python -m semvlp_jax.data.build`, which writes it'
            )
        return cls(path.read_text(encoding='utf-8').splitlines(), holds)


def _number(image_id: str) -> int | None:
    match = _TRAILING_DIGITS.search(image_id)
    return int(match.group(1)) if match else None
