"""The layout of a run directory (`--workdir`): every path a run reads or writes, named once.

    WORKDIR/
      checkpoints/<step>/      orbax checkpoints (state, data iterator, meta)
      corrupt_checkpoints/     damaged checkpoints moved aside
      tokenizer/               the run's tokenizer file (trained or copied at the first start)
      answers.json             pre-training QA answer list (built data), fixed at the first start
      phrases.json             MVPTR phrase vocabulary (`config.data.concepts`), fixed likewise
      <task>/                  a downstream task's files (answer list, results, submissions)
      tensorboard/             TensorBoard scalars
      train_history.jsonl      one line per logged training window
      eval_history.jsonl       one line per evaluation
      metrics.json             the final evaluation

`init_from` may name a run directory, its checkpoints/ or one step directory: `RunDir.of` finds
the run directory in each case.

Paths are `etils.epath.Path`s, so a workdir may be a local directory or a `gs://` location
(with the `gcs` extra installed) and every reader and writer treats both alike.
"""

from __future__ import annotations

import dataclasses
import os

from etils import epath

from semvlp_jax.errors import MissingConfigFile

SYNTHETIC_TOKENIZER = 'synthetic.model'
# The item of a step directory that holds the train state (see checkpoint.py).
STATE_ITEM = 'state'


@dataclasses.dataclass(frozen=True)
class RunDir:
    root: epath.Path

    def __init__(self, root: str | os.PathLike):
        object.__setattr__(self, 'root', epath.Path(root))

    @property
    def checkpoints(self) -> epath.Path:
        return self.root / 'checkpoints'

    @property
    def corrupt_checkpoints(self) -> epath.Path:
        return self.root / 'corrupt_checkpoints'

    @property
    def tokenizer_dir(self) -> epath.Path:
        return self.root / 'tokenizer'

    @property
    def synthetic_tokenizer(self) -> epath.Path:
        return self.tokenizer_dir / SYNTHETIC_TOKENIZER

    @property
    def pretraining_answers(self) -> epath.Path:
        return self.root / 'answers.json'

    @property
    def phrases(self) -> epath.Path:
        return self.root / 'phrases.json'

    @property
    def tensorboard(self) -> epath.Path:
        return self.root / 'tensorboard'

    def history(self, name: str) -> epath.Path:
        """`train_history.jsonl` or `eval_history.jsonl` (name 'train' or 'eval')."""
        return self.root / f'{name}_history.jsonl'

    @property
    def final_metrics(self) -> epath.Path:
        return self.root / 'metrics.json'

    def task_dir(self, task: str) -> epath.Path:
        return self.root / task

    def tokenizer_files(self) -> list[epath.Path]:
        """The tokenizer files this run keeps (none if it keeps no tokenizer directory)."""
        if not self.tokenizer_dir.is_dir():
            return []
        files = self.tokenizer_dir.iterdir()
        return sorted(p for p in files if p.is_file() and not p.name.startswith('.'))

    @classmethod
    def of(cls, path: str | os.PathLike) -> RunDir:
        """The run directory of `path`: the run itself, its checkpoints/ or one step directory
        (the run is the first of path, its parent, its grandparent that keeps checkpoints/ or a
        tokenizer/; path itself when none does)."""
        start = epath.Path(path)
        for directory in (start, *start.parents[:2]):
            if (directory / 'tokenizer').is_dir() or (directory / 'checkpoints').is_dir():
                return cls(directory)
        return cls(start)


def step_directory(path: str | os.PathLike) -> epath.Path:
    """The checkpoint step directory `path` names: a step directory itself, or the latest step of
    a run directory or of its checkpoints/. `MissingConfigFile` (a FileNotFoundError) when
    there is none."""
    path = epath.Path(path)
    if (path / STATE_ITEM).is_dir():
        return path
    root = RunDir(path).checkpoints if RunDir(path).checkpoints.is_dir() else path
    steps = sorted(int(p.name) for p in root.iterdir() if p.name.isdigit()) if root.is_dir() else []
    if not steps:
        raise MissingConfigFile(f'config.init_from={str(path)!r}: no checkpoint found there')
    return root / str(steps[-1])
