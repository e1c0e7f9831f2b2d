"""Pictures of a run: its metric curves and where its text attends in the image.

    python -m semvlp_jax.plots curves --workdir W [--out DIR] [--metrics loss,itm_accuracy]
    python -m semvlp_jax.plots attention --workdir W --example N [--tokens red,circle] [--out DIR]

`curves` writes one PNG per metric (`curves_<metric>.png`: a line per mode and split) from the
run's train_history.jsonl and eval_history.jsonl; `attention` writes `attention_val<N>.png`: the
rendered scene of validation example N under a dark veil that each region box lifts in proportion
to the last layer's attention from the text tokens (all word tokens, or those of `--tokens`), one
panel per mode. Both write to W/plots/ unless `--out` says otherwise. The data behind each figure
comes from a pure function (`curve_series`, `region_weights`), and `config.eval_figures` puts
both figures in TensorBoard at every evaluation (`plots/eval_figures.py`). Figures are
`matplotlib.figure.Figure` objects drawn without pyplot, so no backend is chosen or needed.
"""

from semvlp_jax.plots.attention import (
    Attention,
    ValidationExample,
    attention_figure,
    attention_of,
    query_mask,
    region_weights,
    run_attention,
    text_to_region_attention,
    validation_example,
    write_attention,
)
from semvlp_jax.plots.curves import (
    curve_series,
    metric_figure,
    overview_figure,
    run_history,
    write_curves,
)
from semvlp_jax.plots.render import save_png, show, to_png, to_rgb

__all__ = [
    'Attention',
    'ValidationExample',
    'attention_figure',
    'attention_of',
    'curve_series',
    'metric_figure',
    'overview_figure',
    'query_mask',
    'region_weights',
    'run_attention',
    'run_history',
    'save_png',
    'show',
    'text_to_region_attention',
    'to_png',
    'to_rgb',
    'validation_example',
    'write_attention',
    'write_curves',
]
