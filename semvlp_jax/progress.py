"""Console progress (steps/s, ETA) and what a run writes to its workdir."""

from __future__ import annotations

import collections
import json
import pathlib
import time
from collections.abc import Mapping

import tensorboardX


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
    """What a run leaves in its workdir: TensorBoard scalars under tensorboard/, every evaluation
    as a line of eval_history.jsonl, and the final evaluation as metrics.json.

    Only one process of a multi-host run writes (`enabled`); the others keep the same calls as
    no-ops so the training loop has no branches.
    """

    def __init__(self, workdir: str | pathlib.Path, *, enabled: bool = True):
        self.workdir = pathlib.Path(workdir)
        self.enabled = enabled
        if enabled:
            self._writer = tensorboardX.SummaryWriter(str(self.workdir / 'tensorboard'))
            self._history = open(self.workdir / 'eval_history.jsonl', 'a')

    def scalars(self, step: int, metrics: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        for key, value in metrics.items():
            self._writer.add_scalar(key, float(value), step)
        self._writer.flush()

    def evaluation(self, step: int, results: Mapping[str, float]) -> None:
        self.scalars(step, results)
        if self.enabled:
            self._history.write(json.dumps({'step': step, **results}) + '\n')
            self._history.flush()

    def final(self, results: Mapping[str, float]) -> None:
        if self.enabled:
            text = json.dumps(dict(results), indent=2, sort_keys=True)
            (self.workdir / 'metrics.json').write_text(text)

    def close(self) -> None:
        if self.enabled:
            self._history.close()
            self._writer.close()
