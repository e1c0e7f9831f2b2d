"""Shared settings of the fine-tuning configs (finetune_<task>.py); not a config itself.

A fine-tuning config takes `init=PATH` (a pre-training run's workdir, its checkpoints/ or one
step directory; `init=` for none: train from scratch) and `mode=single|two` (the fine-tuning
and evaluation mode), e.g. `--config configs/finetune_vqa.py:init=/tmp/semvlp_demo,mode=single`.
The model must be the pre-training run's (the demo's, unless overridden the same way in both).

`bert=DIR` starts from an HF BERT checkpoint instead (text side from BERT, the rest new; the
model takes its sizes, the tokenizer its vocab.txt): the BERT-only baseline, with no
vision-language pre-training; `init` is then empty unless given.

With `data=DIR` the task reads datasets built from the official files in DIR (see
`configs/pretrain_real.py`; `tokenizer=PATH`, `kind=` and `images=` as there) and the model is
`pretrain_real`'s; without it, the embedded synthetic data and the demo model.

`pixels=true` fine-tunes a model that reads pixels: on the embedded data the pixel demo's
(`configs/demo_pixels.py`); with `data=DIR` `pretrain_real`'s pixel model, reading the
image-file dataset `images=NAME` (default `image_files`).

`mode=fuse` fine-tunes a SIMLA run (`configs/simla_demo.py`, whose workdir is then the default
`init`): the task's heads on the fused [CLS] (the caption cross-attending to the ViT's tokens),
retrieval's shortlist from the caption alone and the image [CLS]. The momentum teacher and the
masked-patch inputs are pre-training's and are left out.

`mode=staged` fine-tunes an MVPTR run (`configs/mvptr_demo.py`, whose workdir is then the
default `init`; with `data=DIR` the model of `configs/mvptr_pretrain.py`, `objects_vocab=PATH`
as there): the examples keep MVPTR's concepts unmasked (a caption's phrases after its words,
the image's object tags ahead of its regions, the run's phrase vocabulary), the heads read the
joint stage's text [CLS], and retrieval trains VSC with hardest-negative ITM, shortlisting by
the VSC embeddings.
"""

import ml_collections

from configs import (
    args,
    built_data,
    demo,
    demo_pixels,
    mvptr_demo,
    mvptr_pretrain,
    pretrain_real,
    simla_demo,
)

DEFAULT_INIT = '/tmp/semvlp_demo'  # the workdir of the demo command in README and demo.py
SIMLA_INIT = '/tmp/simla_demo'  # ... and of simla_demo.py's
MVPTR_INIT = '/tmp/mvptr_demo'  # ... and of mvptr_demo.py's
MODES = ('single', 'two', 'fuse', 'staged')
RECIPE_INIT = {'fuse': SIMLA_INIT, 'staged': MVPTR_INIT}


def parse_arg(arg: str | None) -> dict[str, str]:
    """'init=/tmp/run,mode=single' -> {'init': '/tmp/run', 'mode': 'single'} (defaults filled).

    `init` defaults to the demo's workdir, or to none (from scratch) when `bert` is given."""
    defaults = {
        'init': None,
        'mode': 'two',
        'data': '',
        'tokenizer': '',
        'kind': '',
        'bert': '',
        'pixels': '',
        'images': '',
        'objects_vocab': '',
    }
    values = args.parse(arg, defaults, choices={'mode': MODES, 'pixels': ('', 'true', 'false')})
    if values['pixels'] == 'true' and values['data'] and not values['images']:
        values['images'] = 'image_files'
    if values['images'] and not values['data']:
        raise ValueError(f'config argument images={values["images"]!r} needs data=DIR')
    if values['mode'] == 'fuse' and values['data']:
        raise ValueError(
            'config arguments mode=fuse with data=DIR: fine-tuning SIMLA on built datasets is '
            'not set up yet (configs/simla_pretrain.py pre-trains on them)'
        )
    if values['mode'] == 'staged':
        refused = [key for key in ('tokenizer', 'kind', 'pixels', 'images') if values[key]]
        if refused:
            raise ValueError(
                f'config argument(s) {refused} with mode=staged: an MVPTR run reads region '
                "features, with the tokenizer of its BERT checkpoint (bert=DIR) or DATA's spm.model"
            )
    elif values['objects_vocab']:
        raise ValueError("config argument objects_vocab= is for mode=staged (MVPTR's tags)")
    if values['init'] is None:
        run = RECIPE_INIT.get(values['mode'], DEFAULT_INIT)
        values['init'] = '' if values['bert'] else run
    return values


def base(arg: str | None, task: dict, objectives: dict[str, float]) -> ml_collections.ConfigDict:
    """The demo config turned into a fine-tune of `task` with `objectives` in one mode."""
    values = parse_arg(arg)
    if values['mode'] == 'staged':
        c = mvptr_demo.get_config()
        if values['data']:
            keys = ('bert', 'objects_vocab')
            built = (f'{key}={values[key]}' for key in keys if values[key])
            c = mvptr_pretrain.get_config(','.join((f'data_dir={values["data"]}', *built)))
            c.data.sources = {}
            c.batch_size = 256  # as the other fine-tunes on built data
        elif values['bert']:
            built_data.from_bert(c, values['bert'])
            c.model.num_cross_layers = c.model.num_layers // 2
    elif values['data']:
        keys = ('tokenizer', 'kind', 'bert', 'images')
        built = (f'{key}={values[key]}' for key in keys if values[key])
        c = pretrain_real.get_config(','.join((f'data_dir={values["data"]}', *built)))
        c.data.sources = {}
    elif values['mode'] == 'fuse':
        c = simla_demo.get_config()
        del c['momentum']  # pre-training's teacher and queues
        c.data.patch_mask.count = 0  # no masked patch modelling here
    elif values['pixels'] == 'true':
        c = demo_pixels.get_config()
    else:
        c = demo.get_config()
    # A labelled-data budget: train on a fixed random subset of this many training examples
    # (0: all; an NLVR2 example is a sentence with one image pair, a retrieval one an image
    # with its captions), e.g. `--config.task.train_examples=400`.
    c.task = {'train_examples': 0, **task}
    c.init_from = values['init']
    if values['bert'] and not c.get('init_bert'):
        built_data.from_bert(c, values['bert'])
    c.schedule = values['mode']
    c.objectives = {values['mode']: objectives}
    c.itm_negative_prob = 0.0
    c.total_steps = 600
    c.eval_every = 300
    c.log_every = 100
    c.checkpoint_every = 600
    c.keep_checkpoints = 1
    c.best_metric = ''
    if values['data']:
        # A few epochs of the official training split at batch 256 (VQA v2: ~1700 steps each).
        c.total_steps = 10_000
        c.eval_every = 2000
        c.checkpoint_every = 2000
        c.optimizer.update(learning_rate=5e-5, warmup_steps=1000)
    else:
        c.optimizer.update(learning_rate=5e-4, warmup_steps=60)
        c.data.update(num_train=4000, num_val=512)
    return ml_collections.ConfigDict(c)
