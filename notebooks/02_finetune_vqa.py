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
# # 2. Fine-tune VQA and ask the model about scenes
#
# The pre-trained encoder gets a fresh answer classifier (dense, GELU, LayerNorm, dense) on its
# pooled output and is fine-tuned two-stream on synthetic VQA v2: questions about the scenes,
# each with ten noisy annotator answers, scored like the official evaluator. Then
# `inference.Predictor` answers questions about validation scenes.
#
# It reuses the pre-training run of notebook 1 when it finds one (same
# `SEMVLP_NOTEBOOK_WORKDIR`, or `SEMVLP_NOTEBOOK_PRETRAINED=DIR`) and pre-trains a shortened
# demo otherwise: a few minutes on a CPU runtime, a few dozen steps with `SEMVLP_NOTEBOOK_TINY=1`.

# %%
# On Colab, install the package from the project's GitHub repository; elsewhere, nothing.
import sys

REPOSITORY = 'git+https://github.com/semvlp-jax/semvlp_jax'  # the project's repository

if 'google.colab' in sys.modules:
    import subprocess

    subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', REPOSITORY], check=True)

# %%
# ruff: noqa: E402 (a notebook imports in the cell that first needs the module)
import dataclasses
import json
import math
import os

import numpy as np
from matplotlib.figure import Figure

from configs import demo, finetune_vqa
from semvlp_jax import plots, train
from semvlp_jax.data import synthetic
from semvlp_jax.data.records import RegionRecord
from semvlp_jax.inference import Predictor, TrainedRun

TINY = os.environ.get('SEMVLP_NOTEBOOK_TINY') == '1'
ROOT = os.environ.get('SEMVLP_NOTEBOOK_WORKDIR', '/tmp/semvlp_notebooks')
PRETRAINED = os.environ.get('SEMVLP_NOTEBOOK_PRETRAINED') or os.path.join(ROOT, 'pretrain')
WORKDIR = os.path.join(ROOT, 'vqa')


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

# %% [markdown]
# ## Fine-tune
#
# `configs/finetune_vqa.py` takes `init=` (the pre-training run) and `mode=`; the model is
# the pre-training run's, so its sizes are read back from the run's checkpoint.

# %%
config = finetune_vqa.get_config(f'init={PRETRAINED},mode=two')
config.model = TrainedRun.load(PRETRAINED).config.model
if TINY:
    config.update(total_steps=30, batch_size=8, log_every=10, eval_every=30, checkpoint_every=30)
    config.data.update(num_train=64, num_val=16)
    config.task.answer_min_count = 2
    config.optimizer.warmup_steps = 5
else:
    config.update(total_steps=300, eval_every=150, log_every=50, checkpoint_every=300)
if os.path.exists(os.path.join(WORKDIR, 'metrics.json')):  # the notebook was run before
    print(f'reusing the fine-tuned run in {WORKDIR}')
    final = json.loads(open(os.path.join(WORKDIR, 'metrics.json')).read())
else:
    final = train.train_and_evaluate(config, WORKDIR)
for key in sorted(final):  # overall and per answer type, as the official evaluator scores
    print(f'{key} {final[key]:.4f}')

# %% [markdown]
# Every evaluation wrote the official results file next to the split's questions and
# annotations, which the local VQA evaluator scores as the official tool does.

# %%
results = sorted(os.listdir(os.path.join(WORKDIR, 'vqa')))
print('\n'.join(results))
answers = json.loads(open(os.path.join(WORKDIR, 'vqa', 'answers.json')).read())
print(f'{len(answers)} answers in the vocabulary, e.g. {answers[:8]}')

# %% [markdown]
# ## Ask questions
#
# `Predictor.load` rebuilds the model from what the run saved (config, data sizes, tokenizer,
# answer list). An image is a `RegionRecord`: a validation scene's region features and boxes.
# The scene is rendered to pixels only to show it.

# %%
predictor = Predictor.load(WORKDIR)
scenes_config = synthetic.SyntheticConfig.from_data(config.data)
drawn = dataclasses.replace(scenes_config, render_pixels=True, image_size=192)
scenes = synthetic.SyntheticScenes(drawn, 'val', config.data.num_val)


def region_record(scene) -> RegionRecord:
    real = scene['region_mask'].astype(bool)
    return RegionRecord(
        image_id=str(scene['image_id']),
        image_height=drawn.image_size,
        image_width=drawn.image_size,
        features=scene['region_features'][real],
        boxes=scene['region_boxes'][real],
        objects=scene['object_labels'][real],
        attributes=scene['attribute_labels'][real],
    )


shown = [scenes[i] for i in range(3)]
figure = Figure(figsize=(12, 5.2), dpi=90, layout='constrained')
for ax, scene in zip(figure.subplots(1, len(shown)), shown):
    image = region_record(scene)
    lines = []
    for question in scene['questions'][:2]:
        top = predictor.answer(image, question['question'], top_k=3)
        guesses = ', '.join(f'{a["answer"]} {a["score"]:.2f}' for a in top)
        print(f'Q: {question["question"]}  truth: {question["answer"]}  top: {guesses}')
        assert all(math.isfinite(a['score']) for a in top)
        lines.append(f'{question["question"]}\n→ {guesses}  (truth: {question["answer"]})')
    ax.imshow(scene['pixels'])
    ax.set_axis_off()
    ax.set_title('\n'.join(lines), fontsize=8)
plots.show(figure)

# %% [markdown]
# A question of your own about one scene (any text the tokenizer can read):

# %%
scene = shown[0]
question = 'how many shapes are there?'
print(question, predictor.answer(region_record(scene), question, top_k=3))
print('objects:', int(np.sum(scene['region_mask'])))
