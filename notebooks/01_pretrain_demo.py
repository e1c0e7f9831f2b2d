# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 1. Pre-train the SemVLP demo and look at its curves
#
# One shared Transformer encoder read two ways, switching mode step by step: **single-stream**
# (image regions and text concatenated, joint self-attention) and **two-stream** (text and
# image through the same layers apart, with cross-attention in the top K layers). It learns
# masked language modelling (MLM), masked object prediction (MOP), image-text matching (ITM),
# question answering (QA) and image-text contrastive learning (ITC) from synthetic scenes of
# coloured shapes that are generated on the fly: no download.
#
# This notebook runs on a CPU runtime in a few minutes (a shortened demo: 400 steps).
# `SEMVLP_NOTEBOOK_TINY=1` shrinks it to a tiny model and a few dozen steps (what CI runs).

# %%
# On Colab, install the package from the project's GitHub repository; elsewhere, nothing.
import sys

REPOSITORY = 'git+https://github.com/semvlp-jax/semvlp_jax'  # the project's repository

if 'google.colab' in sys.modules:
    import subprocess

    subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', REPOSITORY], check=True)

# %%
# ruff: noqa: E402 (a notebook imports in the cell that first needs the module)
import json
import os
import time

from configs import demo
from semvlp_jax import plots, train

TINY = os.environ.get('SEMVLP_NOTEBOOK_TINY') == '1'
# Every notebook writes under this directory; notebooks 2 and 3 reuse the run made here.
ROOT = os.environ.get('SEMVLP_NOTEBOOK_WORKDIR', '/tmp/semvlp_notebooks')
WORKDIR = os.path.join(ROOT, 'pretrain')


def pretrain_config(tiny: bool):
    """The demo config, shortened for a notebook (tiny: a few dozen steps of a tiny model)."""
    config = demo.get_config()
    if tiny:  # MLM and ITM only: on a CPU, compiling the other objectives outlasts the run
        config.update(total_steps=30, batch_size=8, eval_batches=1, log_every=5, eval_every=30)
        config.checkpoint_every = 30
        config.model.update(num_layers=1, num_cross_layers=1, hidden_size=32, num_heads=2)
        config.model.mlp_size = 64
        config.data.update(num_train=64, num_val=16)
        weights = {'mlm': 2.0, 'itm': 2.0}
        config.objectives = {'single': dict(weights), 'two': dict(weights)}
    else:
        config.update(total_steps=400, eval_every=100, log_every=25, checkpoint_every=400)
    # The curves and the attention figure in TensorBoard at every evaluation.
    config.eval_figures = True
    return config


config = pretrain_config(TINY)
print(f'{config.total_steps} steps, schedule {config.schedule}, workdir {WORKDIR}')

# %% [markdown]
# ## Pre-train
#
# `train.train_and_evaluate` is what `python -m semvlp_jax.main --config configs/demo.py`
# runs: it evaluates both modes at the start, every `eval_every` steps and at the end, and
# writes the histories, checkpoints and TensorBoard events to the workdir. Running the cell
# again resumes from the last checkpoint (here: nothing left to do but the final evaluation).

# %%
start = time.perf_counter()
final = train.train_and_evaluate(config, WORKDIR)
print(f'trained in {time.perf_counter() - start:.0f} s')

# %% [markdown]
# The final evaluation is in `metrics.json`, keyed `split/mode/metric`. ITM accuracy starts at
# chance (0.5); after the full demo (800 steps) it passes 0.8 in both modes.

# %%
metrics = json.loads(open(os.path.join(WORKDIR, 'metrics.json')).read())
for key in sorted(metrics):
    if key.rsplit('/', 1)[-1] in ('loss', 'itm_accuracy', 'mlm_accuracy', 'qa_accuracy'):
        print(f'{key} {metrics[key]:.4f}')

# %% [markdown]
# ## Curves
#
# `plots.curve_series` reads every `train/<mode>/<metric>` and `val/<mode>/<metric>` of the
# histories; each figure has a line per mode (colour) and split (solid: training windows,
# dashed: evaluations). The command line writes the same PNGs:
# `python -m semvlp_jax.plots curves --workdir WORKDIR` (to `WORKDIR/plots/`).

# %%
series = plots.curve_series(plots.run_history(WORKDIR))
print('metrics:', ', '.join(series))
plots.show(plots.overview_figure(series, ['loss', 'itm_accuracy', 'mlm_accuracy', 'qa_accuracy']))

# %%
paths = plots.write_curves(WORKDIR, metrics=['loss', 'itm_accuracy'])
print('\n'.join(str(path) for path in paths))
plots.show(plots.metric_figure('itm_accuracy', series['itm_accuracy']))

# %% [markdown]
# With `config.eval_figures = True` the same curves and the attention figure of validation
# example 0 were written to TensorBoard at every evaluation (IMAGES tab:
# `tensorboard --logdir WORKDIR/tensorboard`). Notebook 3 draws that attention figure.
