"""What a build wrote and skipped (`BuildReport`), saved as `build_report.json` beside the
records of a built dataset and read back with `load_report`."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import TYPE_CHECKING

from etils import epath

from semvlp_jax.data.formats import BadInput

if TYPE_CHECKING:
    import tensorflow_datasets as tfds

REPORT_FILE = 'build_report.json'
# Where the dataset is, not what it holds: set from the builder, never saved.
_UNSAVED = ('data_dir', 'version')


@dataclasses.dataclass
class BuildReport:
    """Records written and skipped per split; for each skip reason, its first bad record."""

    dataset: str
    data_dir: str = ''
    version: str = ''
    written: dict[str, int] = dataclasses.field(default_factory=dict)
    skipped: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)
    first_skipped: dict[str, dict[str, str]] = dataclasses.field(default_factory=dict)
    feature_dim: int | None = None

    def skip(self, split: str, error: BadInput) -> None:
        counts = self.skipped.setdefault(split, {})
        counts[error.reason] = counts.get(error.reason, 0) + 1
        self.first_skipped.setdefault(split, {}).setdefault(error.reason, str(error))

    def num_skipped(self, split: str | None = None) -> int:
        splits = self.skipped if split is None else [split]
        return sum(sum(self.skipped.get(s, {}).values()) for s in splits)

    def format(self) -> str:
        lines = [f'{self.dataset} {self.version} in {self.data_dir}']
        for split in sorted(self.written.keys() | self.skipped.keys()):
            lines.append(
                f'  {split}: {self.written.get(split, 0)} records written, '
                f'{self.num_skipped(split)} skipped'
            )
            for reason, count in sorted(self.skipped.get(split, {}).items()):
                first = self.first_skipped[split][reason]
                lines.append(f'    {count} x {reason}; first: {first}')
        if self.feature_dim is not None:
            lines.append(f'  feature dimension: {self.feature_dim}')
        return '\n'.join(lines)

    def save(self, directory: str | os.PathLike) -> epath.Path:
        path = epath.Path(directory) / REPORT_FILE
        fields = dataclasses.asdict(self)
        for name in _UNSAVED:  # the directory is renamed after this is written
            del fields[name]
        path.write_text(json.dumps(fields, indent=1, sort_keys=True) + '\n', encoding='utf-8')
        return path


def load_report(builder: tfds.core.DatasetBuilder) -> BuildReport:
    """The report saved by the build, or the counts tfds stored when there is none."""
    path = epath.Path(builder.data_dir) / REPORT_FILE
    if path.is_file():
        report = BuildReport(**json.loads(path.read_text(encoding='utf-8')))
    else:
        report = BuildReport(
            builder.name,
            written={name: split.num_examples for name, split in builder.info.splits.items()},
        )
    report.data_dir = str(builder.data_dir)
    report.version = str(builder.version)
    return report
