"""Training and validation curves from a run's histories (train_history.jsonl, eval_history.jsonl).

Metric names are not fixed: every history key `train/<mode>/<metric>` or `val/<mode>/<metric>`
(mode `single` or `two`) is a point of the curve of `<metric>` for that split and mode. So a
pre-training run gives loss, MLM / ITM / QA / MOP accuracies and their losses, a VQA fine-tune its
accuracy, an NLVR2 fine-tune accuracy and consistency, and so on. Keys without a mode
(`train/learning_rate`, `train/grad_norm/...`) are not curves of a mode and are left out.
"""

from __future__ import annotations

import collections
import math
import os
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from etils import epath
from matplotlib.figure import Figure

from semvlp_jax.models.encoder import MODES
from semvlp_jax.plots.render import save_png
from semvlp_jax.progress import read_history
from semvlp_jax.workdir import RunDir

SPLITS = ('train', 'val')
# A line of a metric's figure: (split, mode).
Line = tuple[str, str]
# {metric: {(split, mode): (steps, values)}}, steps ascending.
Series = dict[str, dict[Line, tuple[np.ndarray, np.ndarray]]]

# One figure per metric: 640 x 400 pixels.
FIGURE_SIZE = (6.4, 4.0)
DPI = 100
MODE_COLOURS = {'single': 'tab:blue', 'two': 'tab:orange'}
SPLIT_STYLES = {
    'train': dict(linestyle='-', marker='.', markersize=4),
    'val': dict(linestyle='--', marker='o', markersize=5),
}


def run_history(workdir: str | os.PathLike) -> list[dict]:
    """Every record of the run's train_history.jsonl and eval_history.jsonl (train first)."""
    run = RunDir(workdir)
    paths = [run.history(name) for name in ('train', 'eval')]
    if not any(path.is_file() for path in paths):
        raise FileNotFoundError(
            f'{run.root}: no train_history.jsonl or eval_history.jsonl (is it a run directory?)'
        )
    return [record for path in paths if path.is_file() for record in read_history(path)]


def parse_key(key: str) -> tuple[str, str, str] | None:
    """'val/two/itm_accuracy' -> ('val', 'two', 'itm_accuracy'); None for a key of no mode."""
    parts = key.split('/', 2)
    if len(parts) == 3 and parts[0] in SPLITS and parts[1] in MODES:
        return parts[0], parts[1], parts[2]
    return None


def curve_series(records: Iterable[Mapping[str, float]]) -> Series:
    """The data behind the curves: {metric: {(split, mode): (steps, values)}} from history
    records (each `{'step': s, key: value, ...}`), every line sorted by step. Metrics, and the
    lines of each, come in sorted order (train before val, single before two)."""
    points: dict[str, dict[Line, list[tuple[int, float]]]] = collections.defaultdict(
        lambda: collections.defaultdict(list)
    )
    for record in records:
        for key, value in record.items():
            parsed = parse_key(key)
            if parsed is not None:
                split, mode, metric = parsed
                points[metric][split, mode].append((int(record['step']), float(value)))
    series: Series = {}
    for metric in sorted(points):
        series[metric] = {}
        for line in sorted(points[metric], key=_line_order):
            steps, values = zip(*sorted(points[metric][line]))
            series[metric][line] = (np.array(steps, np.int64), np.array(values, np.float64))
    return series


def _line_order(line: Line) -> tuple[int, int]:
    split, mode = line
    return SPLITS.index(split), MODES.index(mode)


def line_label(line: Line) -> str:
    """The legend label of a line: 'train single', 'val two'."""
    return f'{line[0]} {line[1]}'


def draw_metric(ax, metric: str, lines: Mapping[Line, tuple[np.ndarray, np.ndarray]]) -> None:
    """The curves of one metric on `ax`: a colour per mode, a line style per split."""
    for (split, mode), (steps, values) in lines.items():
        ax.plot(
            steps,
            values,
            label=line_label((split, mode)),
            color=MODE_COLOURS[mode],
            **SPLIT_STYLES[split],
        )
    ax.set_title(metric)
    ax.set_xlabel('step')
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize='small')


def metric_figure(metric: str, lines: Mapping[Line, tuple[np.ndarray, np.ndarray]]) -> Figure:
    """One metric's figure (FIGURE_SIZE at DPI: 640 x 400 pixels)."""
    figure = Figure(figsize=FIGURE_SIZE, dpi=DPI)
    ax = figure.add_subplot()
    draw_metric(ax, metric, lines)
    ax.set_ylabel(metric)
    figure.tight_layout()
    return figure


def overview_figure(
    series: Series, metrics: Sequence[str] | None = None, columns: int = 3
) -> Figure:
    """Several metrics as panels of one figure (those of `series` among `metrics`, in that
    order; every metric of `series` by default): the TensorBoard image of the curves."""
    shown = [m for m in (metrics or list(series)) if m in series] or list(series)
    columns = max(1, min(columns, len(shown)))
    rows = max(1, math.ceil(len(shown) / columns))
    figure = Figure(figsize=(4.2 * columns, 3.0 * rows), dpi=80)
    for i, metric in enumerate(shown):
        draw_metric(figure.add_subplot(rows, columns, i + 1), metric, series[metric])
    if not shown:
        figure.text(0.5, 0.5, 'no curves yet', ha='center', va='center')
    figure.tight_layout()
    return figure


def file_name(metric: str) -> str:
    """The PNG of a metric: 'curves_<metric>.png', '/' in the name as '_'."""
    return f'curves_{metric.replace("/", "_")}.png'


def write_curves(
    workdir: str | os.PathLike,
    out: str | os.PathLike | None = None,
    metrics: Sequence[str] | None = None,
) -> list[epath.Path]:
    """One PNG per metric of the run in `workdir` (or only `metrics`), written to `out`
    (default WORKDIR/plots/); returns the paths written."""
    series = curve_series(run_history(workdir))
    if metrics:
        unknown = [m for m in metrics if m not in series]
        if unknown:
            raise ValueError(
                f'no history of metric(s) {", ".join(unknown)}; the run has {", ".join(series)}'
            )
        series = {m: series[m] for m in metrics}
    out = epath.Path(out) if out else RunDir(workdir).root / 'plots'
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for metric, lines in series.items():
        paths.append(save_png(metric_figure(metric, lines), out / file_name(metric)))
    return paths
