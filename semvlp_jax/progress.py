"""Console progress (steps/s, ETA) and what a run writes to its workdir."""

from __future__ import annotations

import collections
import json
import logging as python_logging
import os
import pathlib
import time
from collections.abc import Mapping

import tensorboardX
from absl import logging

from semvlp_jax.workdir import RunDir


def quiet_libraries(record) -> bool:
    """Keeps orbax's and grain's warnings and errors, not their per-save INFO lines."""
    return record.levelno >= python_logging.WARNING or not any(
        f'{os.sep}{name}{os.sep}' in record.pathname for name in ('orbax', 'grain')
    )


def show_progress() -> None:
    """INFO logging for the trainer's progress lines, without orbax's and grain's chatter."""
    logging.set_verbosity(logging.INFO)
    logging.get_absl_handler().python_handler.addFilter(quiet_libraries)


class Progress:
    """Steps/s and ETA over the steps since the last report (compile time is not averaged in)."""

    def __init__(self, total_steps: int, first_step: int = 0):
        self.total_steps = total_steps
        self._last_step, self._last_time = first_step, time.perf_counter()

    def report(self, step: int) -> str:
        now = time.perf_counter()
        rate = (step - self._last_step) / max(now - self._last_time, 1e-9)
        self._last_step, self._last_time = step, now
        eta = (self.total_steps - step) / max(rate, 1e-9)
        return f'{rate:.2f} steps/s, ETA {format_seconds(eta)}'


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

    def __init__(self, workdir: str | pathlib.Path, *, enabled: bool = True, resume_step: int = 0):
        self.run = RunDir(workdir)
        self.enabled = enabled
        if enabled:
            self._writer = tensorboardX.SummaryWriter(str(self.run.tensorboard))
            self._files = {}
            for name in ('train', 'eval'):
                path = self.run.history(name)
                _drop_lines_after(path, resume_step)
                self._files[name] = open(path, 'a')

    def scalars(self, step: int, metrics: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        for key, value in metrics.items():
            self._writer.add_scalar(key, float(value), step)
        self._writer.flush()

    def train(self, step: int, metrics: Mapping[str, float]) -> None:
        self._record('train', step, {f'train/{k}': v for k, v in metrics.items()})

    def evaluation(self, step: int, results: Mapping[str, float]) -> None:
        self._record('eval', step, results)

    def _record(self, name: str, step: int, metrics: Mapping[str, float]) -> None:
        self.scalars(step, metrics)
        if self.enabled:
            line = {'step': step, **{k: float(v) for k, v in metrics.items()}}
            self._files[name].write(json.dumps(line) + '\n')
            self._files[name].flush()

    def final(self, results: Mapping[str, float]) -> None:
        if self.enabled:
            text = json.dumps(dict(results), indent=2, sort_keys=True)
            self.run.final_metrics.write_text(text)

    def close(self) -> None:
        if self.enabled:
            for file in self._files.values():
                file.close()
            self._writer.close()


def _drop_lines_after(path: pathlib.Path, step: int) -> None:
    if not path.exists():
        return
    lines = path.read_text().splitlines(keepends=True)
    kept = [line for line in lines if line.strip() and json.loads(line)['step'] <= step]
    if len(kept) != len(lines):
        path.write_text(''.join(kept))


def read_history(path: str | pathlib.Path) -> list[dict]:
    """The records of a train_history.jsonl or eval_history.jsonl file, in order."""
    return [json.loads(line) for line in pathlib.Path(path).read_text().splitlines() if line]
