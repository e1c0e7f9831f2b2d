"""Shared settings of the demo fine-tuning configs (finetune_<task>.py); not a config itself.

A fine-tuning config takes `init=PATH` (a pre-training run's workdir, its checkpoints/ or one
step directory; `init=` for none: train from scratch) and `mode=single|two` (the fine-tuning
and evaluation mode), e.g. `--config configs/finetune_vqa.py:init=/tmp/semvlp_demo,mode=single`.
The model must be the pre-training run's (the demo's, unless overridden the same way in both).
"""

import ml_collections

from configs import demo

DEFAULT_INIT = '/tmp/semvlp_demo'  # the workdir of the demo command in README and demo.py
MODES = ('single', 'two')


def parse_arg(arg: str | None) -> dict[str, str]:
    """'init=/tmp/run,mode=single' -> {'init': '/tmp/run', 'mode': 'single'} (defaults filled)."""
    values = {'init': DEFAULT_INIT, 'mode': 'two'}
    for item in filter(None, (arg or '').split(',')):
        key, sep, value = item.partition('=')
        if not sep or key not in values:
            raise ValueError(
                f'config argument {item!r}: expected init=PATH and/or mode=single|two, '
                'separated by commas'
            )
        values[key] = value
    if values['mode'] not in MODES:
        raise ValueError(f'config argument mode={values["mode"]!r}; expected one of {MODES}')
    return values


def base(arg: str | None, task: dict, objectives: dict[str, float]) -> ml_collections.ConfigDict:
    """The demo config turned into a fine-tune of `task` with `objectives` in one mode."""
    args = parse_arg(arg)
    c = demo.get_config()
    c.task = task
    c.init_from = args['init']
    c.schedule = args['mode']
    c.objectives = {args['mode']: objectives}
    c.itm_negative_prob = 0.0
    c.total_steps = 600
    c.eval_every = 300
    c.log_every = 100
    c.checkpoint_every = 600
    c.keep_checkpoints = 1
    c.best_metric = ''
    c.optimizer.update(learning_rate=5e-4, warmup_steps=60)
    c.data.update(num_train=4000, num_val=512)
    return ml_collections.ConfigDict(c)
