"""Pre-training: MLM, MOP, ITM and QA (and ITC) in either mode, on the synthetic scenes
(`config.data.name='synthetic'`) or on datasets built from real files (`'tfds'`).

Evaluation is each mode's objective metrics on fixed validation batches (the same examples,
masks and ITM pairings at every evaluation, half of the texts with another image).
"""

from __future__ import annotations

import functools

import jax

from semvlp_jax.data import datasets, pipeline
from semvlp_jax.errors import ConfigError
from semvlp_jax.progress import MetricAverager
from semvlp_jax.tasks.base import EvalContext, Task, TaskData, per_mode
from semvlp_jax.train_step import eval_step

# Evaluation pairs half the validation texts with another image whatever the training share
# (`config.itm_negative_prob`), so ITM accuracy has one meaning (chance 0.5) across configs.
EVAL_ITM_NEGATIVE_PROB = 0.5


class Pretrain(Task):
    name = 'pretrain'
    objectives = frozenset(
        {
            'mlm',
            'mop',
            'itm',
            'qa',
            'itc',
            'itc_momentum',
            'itm_hard',
            'xmm_text',
            'xmm_image',
            'psl',
            'vsc',
            'mcr',
            'itm_hardest',
            'wpg',
        }
    )
    itm_negatives = True
    table_metrics = (
        'mlm_accuracy',
        'itm_accuracy',
        'qa_accuracy',
        'mop_object_accuracy',
        # SIMLA's (fuse mode)
        'itm_positive_accuracy',
        'itc_accuracy',
        'xmm_text_accuracy',
        'xmm_image_accuracy',
        'psl_precision',
        # MVPTR's (staged mode)
        'vsc_accuracy',
        'mcr_accuracy',
        'wpg_accuracy',
        'loss',
    )

    @classmethod
    def check(cls, config) -> None:
        data = config.data
        if data.name == 'synthetic':
            examples = config.eval_batches * config.batch_size
            if not 1 <= examples <= data.num_val:
                raise ConfigError(
                    f'config.eval_batches={config.eval_batches} batches of {config.batch_size} '
                    f'need config.data.num_val >= {examples} (it is {data.num_val})'
                )
            return
        # The size of built validation splits is checked when they are opened.
        sources = data.get('sources') or {}
        if not sources:
            raise ConfigError('config.data.sources is empty: pre-training needs caption or QA data')
        uses_qa = any('qa' in weights for weights in config.objectives.values())
        if uses_qa and not set(sources) & set(datasets.QUESTION_DATASETS):
            raise ConfigError(
                f'config.objectives uses qa but config.data.sources ({", ".join(sources)}) has '
                f'no question dataset ({", ".join(datasets.QUESTION_DATASETS)})'
            )
        if not any(source.get('val_split') for source in sources.values()):
            raise ConfigError('config.data.sources: no source has a val_split to evaluate on')

    @classmethod
    def build(cls, config, workdir, process_index: int, process_count: int) -> TaskData:
        shares = dict(
            batch_size=config.batch_size,
            seed=config.seed,
            process_index=process_index,
            process_count=process_count,
            init_bert=config.get('init_bert', ''),
            pixel_input=pipeline.PixelInput.of(config.model),
        )
        if config.data.name == 'synthetic':
            data = pipeline.synthetic_pretraining(config.data, workdir, **shares)
        else:
            eval_examples = config.eval_batches * config.batch_size
            data = pipeline.built_pretraining(
                config.data, workdir, eval_examples=eval_examples, **shares
            )
        local_batches = data.val[: config.eval_batches]
        cache = {}

        def evaluate(context: EvalContext, params, step: int) -> dict[str, float]:
            """Mean of each metric over the validation batches, keyed `val/<mode>/<metric>`."""
            del step
            if not cache:
                cache['batches'] = [context.to_global(b) for b in local_batches]
                replicated = jax.NamedSharding(context.mesh, jax.P())
                cache['steps'] = {
                    mode: jax.jit(
                        functools.partial(
                            eval_step,
                            mode=mode,
                            graphdef=context.graphdef,
                            objectives=context.config.objectives.to_dict(),
                            itm_negative_prob=EVAL_ITM_NEGATIVE_PROB,
                            with_diagnostics=context.config.get('diagnostics', False),
                        ),
                        out_shardings=replicated,
                    )
                    for mode in context.modes
                }
            rng = jax.random.fold_in(jax.random.key(context.config.seed), 2)

            def evaluate_mode(mode: str) -> dict[str, float]:
                averager = MetricAverager()
                for i, batch in enumerate(cache['batches']):
                    step_fn = cache['steps'][mode]
                    averager.add(jax.device_get(step_fn(params, batch, jax.random.fold_in(rng, i))))
                return averager.pop()

            return per_mode(context, evaluate_mode)

        return TaskData(data.train, data.dims, data.tokenizer, evaluate)
