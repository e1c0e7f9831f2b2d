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
# # 3. Where does the text look? Attention from words to regions
#
# For a validation example of the pre-training run (the scene and the caption or question the
# evaluator pairs with it), the last layer's attention from text tokens to image regions, read
# both ways the shared encoder works:
#
# - **single-stream**: the joint self-attention with text queries, kept on the image keys and
#   renormalised over the real regions;
# - **two-stream**: the text→image cross-attention of the last cross layer.
#
# A region's weight is the mean over heads and chosen tokens; the weights sum to 1. The figure
# dims every region but in proportion to its weight. It reuses the pre-training run of
# notebook 1 when it finds one and pre-trains a shortened demo otherwise (a few minutes on a CPU
# runtime; a few dozen steps with `SEMVLP_NOTEBOOK_TINY=1`).

# %%
# On Colab, install the package from the project's GitHub repository; elsewhere, nothing.
import sys

REPOSITORY = 'git+https://github.com/semvlp-jax/semvlp_jax'  # the project's repository

if 'google.colab' in sys.modules:
    import subprocess

    subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', REPOSITORY], check=True)

# %%
# ruff: noqa: E402 (a notebook imports in the cell that first needs the module)
import os

from configs import demo
from semvlp_jax import plots, train
from semvlp_jax.data import synthetic
from semvlp_jax.inference import TrainedRun

TINY = os.environ.get('SEMVLP_NOTEBOOK_TINY') == '1'
ROOT = os.environ.get('SEMVLP_NOTEBOOK_WORKDIR', '/tmp/semvlp_notebooks')
PRETRAINED = os.environ.get('SEMVLP_NOTEBOOK_PRETRAINED') or os.path.join(ROOT, 'pretrain')


def pretrain_config(tiny: bool):
    """Notebook 1's shortened demo (tiny: a few dozen steps of a tiny model)."""
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
    return config


if os.path.exists(os.path.join(PRETRAINED, 'metrics.json')):
    print(f'reusing the pre-training run in {PRETRAINED}')
else:
    train.train_and_evaluate(pretrain_config(TINY), PRETRAINED)
run = TrainedRun.load(PRETRAINED)
print(
    f'step {run.step}, {run.config.model.num_layers} layers, modes {tuple(run.config.objectives)}'
)

# %% [markdown]
# ## Every word of the text
#
# `plots.run_attention(run, N)` builds validation example N as the evaluator does and reads
# the attention of every word token ([CLS] and [SEP] left out). The command line draws the same
# figure: `python -m semvlp_jax.plots attention --workdir RUN --example N`. Here N is the first
# example whose text names a colour or a shape (some texts are questions such as "how many
# objects are there?").

# %%
named = set(synthetic.COLOURS) | set(synthetic.SHAPES)
index = next(
    i
    for i in range(run.config.data.num_val)
    if named & set(plots.validation_example(run.config, run.tokenizer, i).tokens)
)
attention = plots.run_attention(run, index)
example = attention.example
print(f'example {example.index}: "{example.text}"')
print(f'{"region":<20}' + ''.join(f'{mode:>8}' for mode in attention.weights))
for row, name in enumerate(example.region_names):
    print(f'{name:<20}' + ''.join(f'{w[row]:8.3f}' for w in attention.weights.values()))
for mode, weights in attention.weights.items():
    print(f'{mode}: weights sum to {weights.sum():.4f}')
plots.show(plots.attention_figure(attention))

# %% [markdown]
# ## Chosen words
#
# `words=` (`--tokens` on the command line) keeps the tokens that spell those words: here the
# colour and shape words of the text. After a full pre-training the two-stream panel tends to
# light the object they name.

# %%
words = [token for token in example.tokens if token in named]
print('words:', words)
plots.show(plots.attention_figure(plots.run_attention(run, index, words=words)))

# %% [markdown]
# The raw attention probabilities: `attention.probs[mode]` is [heads, text tokens, regions]
# (single-stream rows before renormalising: their sum is the share of attention that goes to the
# image at all; the cross-attention rows hold nothing but regions).

# %%
real = example.inputs['text_mask'].astype(bool)
for mode, probs in attention.probs.items():
    image_share = probs[:, real].sum(-1).mean()
    print(f'{mode}: probs {probs.shape}, mean mass on the image {image_share:.3f}')
