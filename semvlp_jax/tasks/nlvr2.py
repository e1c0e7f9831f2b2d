"""NLVR2: is a sentence true of a pair of images?

The sentence is encoded with each image (one row per image, in the configured mode), and the two
pooled outputs, concatenated, go through the pair head (the `nlvr2` objective). Evaluation writes
the official predictions CSV (`identifier,True|False`) under WORKDIR/nlvr2/ and reports accuracy
and consistency (the share of sentences whose every image pair is judged right).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from semvlp_jax.data import synthetic_tasks
from semvlp_jax.data.records import NLVR2_HIDDEN, NLVR2_TRUE, Nlvr2Record
from semvlp_jax.errors import ConfigError
from semvlp_jax.evaluators import nlvr2 as nlvr2_eval
from semvlp_jax.tasks import base

IMAGES_PER_EXAMPLE = 2


def predict_labels(model, batch, mode):
    encoded = model(batch, mode=mode)
    logits = model.pair_head(encoded.pooled.reshape(batch['text_ids'].shape[0], -1))
    return {'label': jnp.argmax(logits, axis=-1)}


class Nlvr2(base.RecordTask):
    name = 'nlvr2'
    dataset = 'nlvr2'
    built_splits = {'train': 'train', 'val': 'dev'}
    objectives = frozenset({'nlvr2'})
    table_metrics = ('nlvr2_accuracy', 'nlvr2_consistency')

    def synthetic_records(self, split: str) -> list[Nlvr2Record]:
        return synthetic_tasks.nlvr2(self.images.scenes[split], self.config.data.seed)

    def check_built(self, records: list[Nlvr2Record], where: str) -> None:
        if any(r.label == NLVR2_HIDDEN for r in records):
            raise ValueError(f'{where} has unlabelled records (a hidden test split?)')

    def example(self, record: Nlvr2Record, rng: np.random.Generator | None = None) -> base.Example:
        """The sentence, both images' fields stacked [2, ...] (training views with `rng`), and
        the label."""
        text_ids, text_mask = self.encode(record.sentence)
        pair = base.stack([self.images(image_id, rng) for image_id in record.image_ids])
        return {
            'text_ids': text_ids,
            'text_mask': text_mask,
            **pair,
            'label': np.int32(record.label),
            'is_question': np.int32(0),
        }

    def predict(self, context: base.EvalContext, params, mode: str) -> dict[str, bool]:
        """{identifier: predicted truth} for every validation statement."""
        out = context.predict_all(predict_labels, params, mode, self.val_examples)
        return {r.identifier: bool(p) for r, p in zip(self.val, out['label'])}

    def score(self, predictions: dict[str, bool]):
        labels = {r.identifier: r.label == NLVR2_TRUE for r in self.val}
        scores = nlvr2_eval.score(predictions, labels)
        metrics = {
            'nlvr2_accuracy': scores['accuracy'] / 100,
            'nlvr2_consistency': scores['consistency'] / 100,
        }
        write = lambda path: nlvr2_eval.write_predictions(path, predictions)  # noqa: E731
        return metrics, [base.ResultFile('predictions', '.csv', write)]

    def dims_overrides(self) -> dict[str, int]:
        return {'images_per_example': IMAGES_PER_EXAMPLE}

    @classmethod
    def check(cls, config) -> None:
        if config.data.name != 'synthetic':
            return
        if config.data.num_val < synthetic_tasks.SCENES_PER_SET:
            raise ConfigError(
                f'config.data.num_val={config.data.num_val} gives no NLVR2 example: each '
                f'sentence takes {synthetic_tasks.SCENES_PER_SET} scenes'
            )
