"""Console progress (steps/s, ETA) and what a run writes to its workdir."""

from __future__ import annotations

import collections
import json
import logging as python_logging
import os
import sys
import time
from collections.abc import Mapping

import tensorboardX
import tqdm
from absl import logging
from etils import epath

from semvlp_jax.errors import is_disk_full
from semvlp_jax.workdir import RunDir

# INFO lines of libraries that are harmless and say nothing a user acts on: the backend probe
# that looks for a TPU on every machine without one, orbax's and grain's per-save chatter.
QUIET_INFO = (
    ("Unable to initialize backend 'tpu'", 'xla_bridge'),
    ('', f'{os.sep}orbax{os.sep}'),
    ('', f'{os.sep}grain{os.sep}'),
)


def quiet_libraries(record) -> bool:
    """Keeps every warning and error, and INFO lines except the known-harmless ones; drops
    orbax's tracebacks of a full disk, which the trainer reports once as a DiskFullError."""
    if f'{os.sep}orbax{os.sep}' in record.pathname and (
        'No space left on device' in str(record.msg)
        or (record.exc_info and is_disk_full(record.exc_info[1]))
    ):
        return False
    if record.levelno >= python_logging.WARNING:
        return True
    message = str(record.msg)
    return not any(text in message and place in record.pathname for text, place in QUIET_INFO)


class CompactFormatter(python_logging.Formatter):
    """`15:04:05 message`; warnings and errors keep their level and where they came from."""

    def format(self, record) -> str:
        when = time.strftime('%H:%M:%S', time.localtime(record.created))
        message = record.getMessage()
        if record.exc_info:
            message += '\n' + self.formatException(record.exc_info)
        if record.levelno >= python_logging.WARNING:
            where = f'{os.path.basename(record.pathname)}:{record.lineno}'
            return f'{when} {record.levelname} {where}: {message}'
        return f'{when} {message}'


class _AboveTheBar:
    """A stream for the log handler that prints above a live progress bar (tqdm.write)."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text: str) -> None:
        tqdm.tqdm.write(text, end='', file=self._stream)

    def flush(self) -> None:
        self._stream.flush()


def show_progress() -> None:
    """The calm console: INFO lines as `time message`, libraries' known-harmless INFO dropped."""
    logging.set_verbosity(logging.INFO)
    handler = logging.get_absl_handler().python_handler
    handler.addFilter(quiet_libraries)
    handler.setFormatter(CompactFormatter())


class Progress:
    """Steps/s and ETA over the steps since the last report (compile time is not averaged in),
    and, where stderr is a terminal, a live bar of the completed steps under the log lines."""

    def __init__(self, total_steps: int, first_step: int = 0, *, live: bool | None = None):
        self.total_steps = total_steps
        self._last_step, self._last_time = first_step, time.perf_counter()
        live = sys.stderr.isatty() if live is None else live
        self._bar = None
        if live:
            self._bar = tqdm.tqdm(
                total=total_steps, initial=first_step, unit='step', leave=False, dynamic_ncols=True
            )
            handler = logging.get_absl_handler().python_handler
            self._stream = handler.stream
            handler.setStream(_AboveTheBar(self._stream))

    def report(self, step: int) -> str:
        now = time.perf_counter()
        rate = (step - self._last_step) / max(now - self._last_time, 1e-9)
        self._last_step, self._last_time = step, now
        eta = (self.total_steps - step) / max(rate, 1e-9)
        return f'{rate:.2f} steps/s  ETA {format_seconds(eta)}'

    def advance(self, step: int) -> None:
        """Step `step` is complete (moves the live bar)."""
        if self._bar is not None:
            self._bar.update(step - self._bar.n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            logging.get_absl_handler().python_handler.setStream(self._stream)
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def headline(metrics: Mapping[str, float], names: tuple[str, ...]) -> str:
    """`single loss 3.210 itm 0.712 | two loss ...`: per mode (the part of a key before its
    metric name), the loss and `names`, accuracies shown without their `_accuracy` suffix."""
    by_mode: dict[str, list[str]] = collections.defaultdict(list)
    for name in dict.fromkeys(('loss', *names)):
        for key in sorted(metrics):
            *scope, metric = key.split('/')
            if metric == name and scope:
                short = name.removesuffix('_accuracy')
                by_mode[scope[-1]].append(f'{short} {metrics[key]:.3f}')
    return ' | '.join(f'{mode} ' + ' '.join(values) for mode, values in by_mode.items())


def format_seconds(seconds: float) -> str:
    minutes, seconds = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f'{hours}h{minutes:02d}m{seconds:02d}s' if hours else f'{minutes}m{seconds:02d}s'


class MetricAverager:
    """Averages each metric over the steps that reported it (modes alternate, so counts differ)."""

    def __init__(self):
        self._sums = collections.defaultdict(float)
        self._counts = collections.defaultdict(int)

    def add(self, metrics: Mapping[str, float]) -> None:
        for key, value in metrics.items():
            self._sums[key] += float(value)
            self._counts[key] += 1

    def pop(self) -> dict[str, float]:
        means = {k: self._sums[k] / self._counts[k] for k in self._sums}
        self._sums.clear()
        self._counts.clear()
        return means


class RunLog:
    """What a run leaves in its workdir: TensorBoard scalars under tensorboard/, every logged
    training window as a line of train_history.jsonl, every evaluation as a line of
    eval_history.jsonl, and the final evaluation as metrics.json.

    A run resumed at step s first drops history lines after s (written by the interrupted run
    after its last checkpoint), so each step appears once. Only one process of a multi-host run
    writes (`enabled`); the others keep the same calls as no-ops so the loop has no branches.
    """

    def __init__(self, workdir: str | os.PathLike, *, enabled: bool = True, resume_step: int = 0):
        self.run = RunDir(workdir)
        self.enabled = enabled
        if enabled:
            self._writer = tensorboardX.SummaryWriter(os.fspath(self.run.tensorboard))
            self._files = {
                name: History(self.run.history(name), resume_step) for name in ('train', 'eval')
            }

    def scalars(self, step: int, metrics: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        for key, value in metrics.items():
            self._writer.add_scalar(key, float(value), step)
        self._writer.flush()

    def image(self, tag: str, image, step: int) -> None:
        """A uint8 RGB image [height, width, 3] in TensorBoard's images (config.eval_figures)."""
        if self.enabled:
            self._writer.add_image(tag, image, step, dataformats='HWC')
            self._writer.flush()

    def train(self, step: int, metrics: Mapping[str, float]) -> None:
        self._record('train', step, {f'train/{k}': v for k, v in metrics.items()})

    def evaluation(self, step: int, results: Mapping[str, float]) -> None:
        self._record('eval', step, results)

    def _record(self, name: str, step: int, metrics: Mapping[str, float]) -> None:
        self.scalars(step, metrics)
        if self.enabled:
            self._files[name].append({'step': step, **{k: float(v) for k, v in metrics.items()}})

    def final(self, results: Mapping[str, float]) -> None:
        if self.enabled:
            text = json.dumps(dict(results), indent=2, sort_keys=True)
            self.run.final_metrics.write_text(text)

    def close(self) -> None:
        if self.enabled:
            for file in self._files.values():
                file.close()
            self._writer.close()


class History:
    """A JSON-lines history file, its lines after `resume_step` dropped at open.

    A local file is appended to and flushed line by line. An object store cannot append: there
    the lines are kept and the object rewritten at each record (histories are small)."""

    def __init__(self, path: epath.Path, resume_step: int):
        self.path = epath.Path(path)
        self._local = '://' not in os.fspath(self.path)
        lines = self.path.read_text().splitlines(keepends=True) if self.path.exists() else []
        kept = [line for line in lines if line.strip() and json.loads(line)['step'] <= resume_step]
        if len(kept) != len(lines):
            self.path.write_text(''.join(kept))
        self._lines = kept
        self._file = self.path.open('a') if self._local else None

    def append(self, record: Mapping[str, float]) -> None:
        line = json.dumps(dict(record)) + '\n'
        if self._file is not None:
            self._file.write(line)
            self._file.flush()
        else:
            self._lines.append(line)
            self.path.write_text(''.join(self._lines))

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def read_history(path: str | os.PathLike) -> list[dict]:
    """The records of a train_history.jsonl or eval_history.jsonl file, in order."""
    return [json.loads(line) for line in epath.Path(path).read_text().splitlines() if line]
