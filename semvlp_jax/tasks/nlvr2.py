"""NLVR2: is a sentence true of a pair of images?

The sentence is encoded with each image (one row per image, in the configured mode), and the two
pooled outputs, concatenated, go through the pair head (the `nlvr2` objective). Evaluation writes
the official predictions CSV (`identifier,True|False`) under WORKDIR/nlvr2/ and reports accuracy
and consistency (the share of sentences whose every image pair is judged right).
"""

from __future__ import annotations

import pathlib

import jax.numpy as jnp
import numpy as np

from semvlp_jax.data import pipeline, synthetic_tasks
from semvlp_jax.evaluators import nlvr2 as nlvr2_eval
from semvlp_jax.tasks import base, sources

IMAGES_PER_EXAMPLE = 2


def predict_labels(model, batch, mode):
    encoded = model(batch, mode=mode)
    logits = model.pair_head(encoded.pooled.reshape(batch['text_ids'].shape[0], -1))
    return {'label': jnp.argmax(logits, axis=-1)}


class PairExample:
    """A record -> the sentence, both images' region fields stacked [2, ...], and the label."""

    def __init__(self, tokenizer, images: sources.Images, max_text_len: int):
        self.encode = pipeline.TextEncoder(tokenizer, max_text_len)
        self.images = images

    def __call__(self, record: dict, rng: np.random.Generator | None = None) -> base.Example:
        del rng
        text_ids, text_mask = self.encode(record['sentence'])
        pair = base.stack([self.images(image_id) for image_id in record['images']])
        return {
            'text_ids': text_ids,
            'text_mask': text_mask,
            **pair,
            'label': np.int32(nlvr2_eval.parse_label(record['label'])),
            'is_question': np.int32(0),
        }


def build(config, workdir, process_index: int, process_count: int) -> base.TaskData:
    workdir = pathlib.Path(workdir)
    tokenizer = base.tokenizer(config, workdir)
    images = sources.images(config)
    train_records, val_records = (
        sources.nlvr2_records(config, images, split) for split in ('train', 'val')
    )
    to_example = PairExample(tokenizer, images, config.data.max_text_len)
    val_examples = base.stack([to_example(r) for r in val_records])
    labels = {r['identifier']: r['label'] for r in val_records}
    out = workdir / 'nlvr2'

    def evaluate(context: base.EvalContext, params, step: int) -> dict[str, float]:
        results = {}
        for mode in context.modes:
            predicted = context.predict(
                predict_labels, params, mode, len(val_records), base.take(val_examples)
            )['label']
            predictions = {r['identifier']: bool(p) for r, p in zip(val_records, predicted)}
            if context.is_writer:
                out.mkdir(parents=True, exist_ok=True)
                nlvr2_eval.write_predictions(
                    out / f'predictions_val_{mode}_step{step}.csv', predictions
                )
            scores = nlvr2_eval.score(predictions, labels)
            results[f'val/{mode}/nlvr2_accuracy'] = scores['accuracy'] / 100
            results[f'val/{mode}/nlvr2_consistency'] = scores['consistency'] / 100
        return results

    train = base.train_batches(train_records, to_example, config, process_index, process_count)
    dims = base.data_dims(config, tokenizer, images_per_example=IMAGES_PER_EXAMPLE)
    return base.TaskData(train, dims, tokenizer, evaluate)


def check(config) -> None:
    if sources.is_built(config):
        return
    if config.data.num_val < synthetic_tasks.SCENES_PER_SET:
        raise ValueError(
            f'config.data.num_val={config.data.num_val} gives no NLVR2 example: each sentence '
            f'takes {synthetic_tasks.SCENES_PER_SET} scenes'
        )


TASK = base.Task(
    name='nlvr2',
    objectives=frozenset({'nlvr2'}),
    itm_negatives=False,
    build=build,
    check=check,
)
