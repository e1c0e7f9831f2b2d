"""`config.eval_figures`: pictures in TensorBoard at every evaluation.

Two images, under TensorBoard's IMAGES tab: `figures/curves`, the curves of the task's table
metrics so far (from the run's histories), and `figures/attention`, the attention figure of
validation example EXAMPLE (runs on the synthetic scenes only). Every process computes the
attention (the parameters may be sharded over all of them); only the writer process draws and
writes.
"""

from __future__ import annotations

import os

import ml_collections

from semvlp_jax import tasks
from semvlp_jax.data.tokenizers import Tokenizer
from semvlp_jax.plots import attention, curves
from semvlp_jax.plots.render import to_rgb
from semvlp_jax.progress import RunLog
from semvlp_jax.tasks.base import EvalContext, take

EXAMPLE = 0  # the validation example whose attention is drawn


class EvalFigures:
    """Writes the figures of one evaluation (`write`); built once per run by the trainer."""

    def __init__(
        self,
        config: ml_collections.ConfigDict,
        workdir: str | os.PathLike,
        tokenizer: Tokenizer,
        context: EvalContext,
    ):
        self.workdir = workdir
        self.context = context
        self.metrics = tasks.get(config.task.name).table_metrics
        self.layer = config.model.num_layers - 1
        # The attention figure draws region boxes: synthetic scenes read as regions only, in
        # SemVLP's modes (not yet MVPTR's staged one, whose examples carry concepts).
        draws_regions = config.model.visual_input == 'regions' and not config.data.get('concepts')
        self.example = (
            attention.validation_example(config, tokenizer, EXAMPLE)
            if config.data.name == 'synthetic' and draws_regions
            else None
        )

    def write(self, log: RunLog, step: int, params) -> None:
        """The figures at `step` through `log` (a no-op but for the attention on processes
        that do not write)."""
        probs = {}
        if self.example is not None:
            rows = take({key: value[None] for key, value in self.example.inputs.items()})
            for mode in self.context.modes:
                read = self.context.predict(
                    attention.text_to_region_attention, params, mode, 1, rows
                )
                probs[mode] = read['probs'][0]
        if not log.enabled:
            return
        series = curves.curve_series(curves.run_history(self.workdir))
        log.image('figures/curves', to_rgb(curves.overview_figure(series, self.metrics)), step)
        if probs:
            drawn = attention.attention_of(self.example, probs, self.layer)
            log.image('figures/attention', to_rgb(attention.attention_figure(drawn)), step)
