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
questions and annotations of the split are written there too, so
`python -m semvlp_jax.evaluators.vqa_eval` reproduces the numbers from the files.
"""

from __future__ import annotations

import collections
import json
import pathlib

import jax.numpy as jnp
import ml_collections
import numpy as np

from semvlp_jax.data import pipeline
from semvlp_jax.data.answers import answer_scores
from semvlp_jax.evaluators import gqa as gqa_eval
from semvlp_jax.evaluators import vqa_eval
from semvlp_jax.tasks import base, sources


def predict_answers(model, batch, mode):
    return {'answer': jnp.argmax(model.answer_head(model(batch, mode=mode).pooled), axis=-1)}


class QuestionExample:
    """A question record -> an example: question text, its image's regions, answer targets."""

    def __init__(self, tokenizer, images: sources.Images, max_text_len: int, targets):
        self.encode = pipeline.TextEncoder(tokenizer, max_text_len)
        self.images = images
        self.targets = targets  # record -> [num_answers] float32

    def __call__(self, record: dict, rng: np.random.Generator | None = None) -> base.Example:
        del rng
        text_ids, text_mask = self.encode(record['question'])
        return {
            'text_ids': text_ids,
            'text_mask': text_mask,
            **self.images(record['image_id']),
            'answer_scores': self.targets(record),
            'is_question': np.int32(1),
        }


def _write_json(is_writer: bool, path: pathlib.Path, value) -> None:
    if is_writer:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(value))


def _question_records(questions: dict, annotations: dict) -> list[dict]:
    by_id = {a['question_id']: a for a in annotations['annotations']}
    return [
        {
            'question_id': q['question_id'],
            'image_id': q['image_id'],
            'question': q['question'],
            'answers': [
                vqa_eval.normalize_answer(a['answer']) for a in by_id[q['question_id']]['answers']
            ],
        }
        for q in questions['questions']
    ]


def _answer_predictions(context, params, examples: base.Example, vocabulary: list[str], mode):
    count = len(examples['text_ids'])
    out = context.predict(predict_answers, params, mode, count, base.take(examples))
    return [vocabulary[i] for i in out['answer']]


def build_vqa(config, workdir, process_index: int, process_count: int) -> base.TaskData:
    workdir = pathlib.Path(workdir)
    tokenizer = base.tokenizer(config, workdir)
    images = sources.images(config)
    train_files, val_files = (sources.vqa_files(config, images, s) for s in ('train', 'val'))

    vocabulary = pipeline.answer_vocabulary(
        collections.Counter(
            vqa_eval.normalize_answer(a['multiple_choice_answer'])
            for a in train_files[1]['annotations']
        ),
        config.task.answer_min_count,
        'task.answer_min_count',
    )
    index = {answer: i for i, answer in enumerate(vocabulary)}
    to_example = QuestionExample(
        tokenizer,
        images,
        config.data.max_text_len,
        lambda record: answer_scores(record['answers'], index),
    )
    out = workdir / 'vqa'
    is_writer = process_index == 0
    _write_json(is_writer, out / 'answers.json', vocabulary)
    _write_json(is_writer, out / 'val_questions.json', val_files[0])
    _write_json(is_writer, out / 'val_annotations.json', val_files[1])

    val_records = _question_records(*val_files)
    val_examples = base.stack([to_example(r) for r in val_records])
    question_ids = [r['question_id'] for r in val_records]

    def evaluate(context: base.EvalContext, params, step: int) -> dict[str, float]:
        results = {}
        for mode in context.modes:
            answers = _answer_predictions(context, params, val_examples, vocabulary, mode)
            predictions = dict(zip(question_ids, answers))
            if context.is_writer:
                vqa_eval.write_results(out / f'results_val_{mode}_step{step}.json', predictions)
            scores = vqa_eval.score(
                *val_files,
                [{'question_id': q, 'answer': a} for q, a in predictions.items()],
                results_source=f'predictions at step {step}',
            )
            results[f'val/{mode}/vqa_accuracy'] = scores.overall / 100
            for answer_type, value in scores.per_answer_type.items():
                results[f'val/{mode}/vqa_accuracy_{_slug(answer_type)}'] = value / 100
        return results

    train = base.train_batches(
        _question_records(*train_files), to_example, config, process_index, process_count
    )
    dims = base.data_dims(config, tokenizer, num_answers=len(vocabulary))
    return base.TaskData(train, dims, tokenizer, evaluate)


def build_gqa(config, workdir, process_index: int, process_count: int) -> base.TaskData:
    workdir = pathlib.Path(workdir)
    tokenizer = base.tokenizer(config, workdir)
    images = sources.images(config)
    train_questions, val_questions = (
        sources.gqa_questions(config, images, s) for s in ('train', 'val')
    )
    vocabulary = pipeline.answer_vocabulary(
        collections.Counter(q['answer'] for q in train_questions.values()),
        config.task.answer_min_count,
        'task.answer_min_count',
    )
    index = {answer: i for i, answer in enumerate(vocabulary)}

    def one_hot(record):
        scores = np.zeros(len(vocabulary), np.float32)
        if record['answer'] in index:
            scores[index[record['answer']]] = 1.0
        return scores

    to_example = QuestionExample(tokenizer, images, config.data.max_text_len, one_hot)
    out = workdir / 'gqa'
    is_writer = process_index == 0
    _write_json(is_writer, out / 'answers.json', vocabulary)
    _write_json(is_writer, out / 'val_balanced_questions.json', val_questions)

    def records(questions):
        return [
            {'question_id': qid, 'image_id': int(q['imageId']), **q} for qid, q in questions.items()
        ]

    val_records = records(val_questions)
    val_examples = base.stack([to_example(r) for r in val_records])

    def evaluate(context: base.EvalContext, params, step: int) -> dict[str, float]:
        results = {}
        for mode in context.modes:
            answers = _answer_predictions(context, params, val_examples, vocabulary, mode)
            predictions = {r['question_id']: a for r, a in zip(val_records, answers)}
            if context.is_writer:
                gqa_eval.write_submission(
                    out / f'submission_val_{mode}_step{step}.json', predictions
                )
            scores = gqa_eval.score(val_questions, predictions)
            results[f'val/{mode}/gqa_accuracy'] = scores['accuracy'] / 100
            for kind, value in scores.get('per_structural_type', {}).items():
                results[f'val/{mode}/gqa_accuracy_{_slug(kind)}'] = value / 100
        return results

    train = base.train_batches(
        records(train_questions), to_example, config, process_index, process_count
    )
    dims = base.data_dims(config, tokenizer, num_answers=len(vocabulary))
    return base.TaskData(train, dims, tokenizer, evaluate)


def _slug(name: str) -> str:
    """'yes/no' -> 'yes_no': metric names keep '/' for `val/<mode>/<metric>`."""
    return ''.join(c if c.isalnum() else '_' for c in name)


def check(config: ml_collections.ConfigDict) -> None:
    min_count = config.task.get('answer_min_count')
    if not isinstance(min_count, int) or min_count < 1:
        raise ValueError(f'config.task.answer_min_count={min_count!r} must be an integer >= 1')


VQA = base.Task(
    name='vqa', objectives=frozenset({'qa'}), itm_negatives=False, build=build_vqa, check=check
)
GQA = base.Task(
    name='gqa', objectives=frozenset({'qa'}), itm_negatives=False, build=build_gqa, check=check
)
