"""VQA v2 and GQA: answer classification on the pooled output (the `qa` objective).

VQA: the answer vocabulary is the normalised `multiple_choice_answer`s seen at least
`config.task.answer_min_count` times in training; targets are soft scores from the ten annotator
answers (0, .3, .6, .9, 1 for 0..4+ agreeing: the leave-one-out metric), with BCE. Unlike the
reference preprocessing, annotator answers are normalised before they are counted, so "2" and
"two" agree as they do in the evaluator.
GQA: the answer set is every training answer; targets are one-hot, with the same BCE head.

Evaluation predicts the arg-max answer for every question of the validation split, writes the
official results file (VQA `[{"question_id", "answer"}]`, GQA `[{"questionId", "prediction"}]`)
under WORKDIR/<task>/, and scores it with the local copy of the official evaluator. The VQA
questions and annotations of the split are written there too (at the first evaluation), so
`python -m semvlp_jax.evaluators.vqa_eval` reproduces the numbers from the files.
"""

from __future__ import annotations

import collections
import functools

import jax.numpy as jnp
import numpy as np

from semvlp_jax.data import synthetic_tasks
from semvlp_jax.data.answers import answer_scores
from semvlp_jax.data.records import GqaRecord, VqaRecord
from semvlp_jax.data.vocabularies import answer_vocabulary
from semvlp_jax.errors import ConfigError
from semvlp_jax.evaluators import gqa as gqa_eval
from semvlp_jax.evaluators import vqa_eval
from semvlp_jax.tasks import base


def predict_answers(model, batch, mode):
    return {'answer': jnp.argmax(model.answer_head(model(batch, mode=mode).pooled), axis=-1)}


class QuestionTask(base.RecordTask):
    """What VQA and GQA share: a question and its image in, an answer of a fixed list out."""

    objectives = frozenset({'qa'})

    def answer_counts(self, train: list) -> collections.Counter:
        raise NotImplementedError

    def targets(self, record) -> np.ndarray:
        """[num_answers] float32 target scores of a record."""
        raise NotImplementedError

    def prepare(self, train: list) -> None:
        counts = self.answer_counts(train)
        self.vocabulary = answer_vocabulary(
            counts, self.config.task.answer_min_count, 'task.answer_min_count'
        )
        self.answer_index = {answer: i for i, answer in enumerate(self.vocabulary)}
        self.write_json('answers.json', self.vocabulary)

    def example(self, record, rng: np.random.Generator | None = None) -> base.Example:
        """The question, its image (a training view with `rng`) and its answer scores."""
        text_ids, text_mask = self.encode(record.question)
        return {
            'text_ids': text_ids,
            'text_mask': text_mask,
            **self.images(record.image_id, rng),
            'answer_scores': self.targets(record),
            'is_question': np.int32(1),
        }

    def predict(self, context: base.EvalContext, params, mode: str) -> dict[str, str]:
        """{question id: predicted answer} for every validation question."""
        out = context.predict_all(predict_answers, params, mode, self.val_examples)
        return {r.question_id: self.vocabulary[i] for r, i in zip(self.val, out['answer'])}

    def dims_overrides(self) -> dict[str, int]:
        return {'num_answers': len(self.vocabulary)}

    @classmethod
    def check(cls, config) -> None:
        min_count = config.task.get('answer_min_count')
        if not isinstance(min_count, int) or min_count < 1:
            raise ConfigError(f'config.task.answer_min_count={min_count!r} must be an integer >= 1')


class Vqa(QuestionTask):
    name = 'vqa'
    dataset = 'vqa_v2'
    table_metrics = ('vqa_accuracy',)

    def synthetic_records(self, split: str) -> list[VqaRecord]:
        return synthetic_tasks.vqa(self.images.scenes[split])

    def check_built(self, records: list[VqaRecord], where: str) -> None:
        if any(not r.answers for r in records):
            raise ValueError(f'{where} has no answers (a test split?): it cannot train or score')

    def answer_counts(self, train: list[VqaRecord]) -> collections.Counter:
        return collections.Counter(
            vqa_eval.normalize_answer(r.multiple_choice_answer) for r in train
        )

    def targets(self, record: VqaRecord) -> np.ndarray:
        answers = [vqa_eval.normalize_answer(a) for a in record.answers]
        return answer_scores(answers, self.answer_index)

    @functools.cached_property
    def official_val_files(self) -> tuple[dict, dict]:
        """The validation split's official (questions, annotations), written beside the results
        at the first evaluation so the scoring command reproduces the numbers."""
        questions, annotations = official_vqa_files(self.val)
        self.write_json('val_questions.json', questions)
        self.write_json('val_annotations.json', annotations)
        return questions, annotations

    def score(self, predictions: dict[str, str]):
        questions, annotations = self.official_val_files
        results = {_official_id(qid): answer for qid, answer in predictions.items()}
        scores = vqa_eval.score(
            questions,
            annotations,
            [{'question_id': q, 'answer': a} for q, a in results.items()],
            results_source='the predictions',
        )
        metrics = {'vqa_accuracy': scores.overall / 100}
        for answer_type, value in scores.per_answer_type.items():
            metrics[f'vqa_accuracy_{base.slug(answer_type)}'] = value / 100
        write = lambda path: vqa_eval.write_results(path, results)  # noqa: E731
        return metrics, [base.ResultFile('results', '.json', write)]


def _official_id(value: str) -> int | str:
    """VQA's files number questions and images: '42' -> 42."""
    return int(value) if value.isdigit() else value


def official_vqa_files(records: list[VqaRecord]) -> tuple[dict, dict]:
    """The official (questions, annotations) JSON of VQA records, as the evaluator reads them."""
    questions, annotations = [], []
    for r in records:
        question_id, image_id = _official_id(r.question_id), _official_id(r.image_id)
        questions.append({'image_id': image_id, 'question': r.question, 'question_id': question_id})
        annotations.append(
            {
                'question_id': question_id,
                'image_id': image_id,
                'question_type': r.question_type,
                'answer_type': r.answer_type,
                'multiple_choice_answer': r.multiple_choice_answer,
                'answers': [
                    {'answer': answer, 'answer_confidence': confidence, 'answer_id': i + 1}
                    for i, (answer, confidence) in enumerate(
                        zip(r.answers, r.answer_confidences, strict=True)
                    )
                ],
            }
        )
    return {'questions': questions}, {'annotations': annotations}


class Gqa(QuestionTask):
    name = 'gqa'
    dataset = 'gqa'
    table_metrics = ('gqa_accuracy',)

    def synthetic_records(self, split: str) -> list[GqaRecord]:
        return synthetic_tasks.gqa(self.images.scenes[split])

    def answer_counts(self, train: list[GqaRecord]) -> collections.Counter:
        return collections.Counter(r.answer for r in train)

    def targets(self, record: GqaRecord) -> np.ndarray:
        scores = np.zeros(len(self.vocabulary), np.float32)
        if record.answer in self.answer_index:
            scores[self.answer_index[record.answer]] = 1.0
        return scores

    @functools.cached_property
    def official_val_questions(self) -> dict[str, dict]:
        questions = official_gqa_questions(self.val)
        self.write_json('val_balanced_questions.json', questions)
        return questions

    def score(self, predictions: dict[str, str]):
        questions = self.official_val_questions
        scores = gqa_eval.score(questions, predictions)
        metrics = {'gqa_accuracy': scores['accuracy'] / 100}
        for kind, value in scores.get('per_structural_type', {}).items():
            metrics[f'gqa_accuracy_{base.slug(kind)}'] = value / 100
        write = lambda path: gqa_eval.write_submission(path, predictions)  # noqa: E731
        return metrics, [base.ResultFile('submission', '.json', write)]


def official_gqa_questions(records: list[GqaRecord]) -> dict[str, dict]:
    """The balanced-questions JSON `{question id: {imageId, question, answer, types}}`."""
    return {
        r.question_id: {
            'imageId': r.image_id,
            'question': r.question,
            'answer': r.answer,
            'types': {'structural': r.structural},
        }
        for r in records
    }
