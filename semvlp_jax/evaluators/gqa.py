"""GQA accuracy (overall and per structural type) and the official submission JSON.

The submission is a JSON list `[{"questionId": str, "prediction": str}, ...]`; questions come from
the balanced-questions JSON object `{questionId: {"imageId", "question", "answer", "types", ...}}`.
"""

from __future__ import annotations

import collections
import json
import os
from collections.abc import Mapping

from etils import epath

from semvlp_jax.evaluators.errors import PredictionsError, check_one_prediction_each


def _normalise(answer: str) -> str:
    return answer.strip().lower()


def write_submission(path: str | os.PathLike, predictions: Mapping[str, str]) -> None:
    """Write the official submission list, sorted by questionId."""
    records = []
    for qid in sorted(predictions):
        prediction = predictions[qid]
        if not isinstance(qid, str) or not isinstance(prediction, str):
            raise PredictionsError(
                f'questionId and prediction must be strings, got {qid!r}: {prediction!r}'
            )
        records.append({'questionId': qid, 'prediction': prediction})
    with epath.Path(path).open('w', encoding='utf-8') as f:
        json.dump(records, f)


def load_submission(path: str | os.PathLike) -> dict[str, str]:
    """Read a submission list into `{questionId: prediction}`."""
    with epath.Path(path).open(encoding='utf-8') as f:
        records = json.load(f)
    if not isinstance(records, list):
        raise PredictionsError(
            f'{path}: a GQA submission is a JSON list, got {type(records).__name__}'
        )
    predictions: dict[str, str] = {}
    for index, record in enumerate(records):
        if not isinstance(record, dict) or not {'questionId', 'prediction'} <= record.keys():
            raise PredictionsError(
                f'{path}: record {index} must be an object with "questionId" and "prediction", '
                f'got {record!r}'
            )
        qid, prediction = record['questionId'], record['prediction']
        if not isinstance(qid, str) or not isinstance(prediction, str):
            raise PredictionsError(
                f'{path}: record {index}: questionId and prediction must be strings, got {record!r}'
            )
        if qid in predictions:
            raise PredictionsError(f'{path}: record {index}: duplicate questionId {qid!r}')
        predictions[qid] = prediction
    return predictions


def score(
    questions: Mapping[str, dict], predictions: Mapping[str, str]
) -> dict[str, float | dict[str, float]]:
    """'accuracy' as a percentage of exact matches, and 'per_structural_type' when available.

    Prediction and answer are compared after strip + lower-case. GQA answers are already
    normalised lower-case single tokens, so this is the official evaluation's exact match; unlike
    VQA there is no answer-normalisation step to mirror. 'per_structural_type' maps each
    `types['structural']` value (e.g. 'query', 'verify') to its accuracy; it is present only when
    every question carries one, as the real GQA question files do.
    """
    if not questions:
        raise ValueError('no questions to score against')
    check_one_prediction_each(
        predictions,
        questions,
        missing='no prediction for questions',
        unknown='predictions for unknown questions',
    )

    n_correct = 0
    by_type: dict[str, list[bool]] = collections.defaultdict(list)
    untyped = 0
    for qid, question in questions.items():
        if 'answer' not in question:
            raise ValueError(
                f'question {qid!r} has no answer (a test split cannot be scored locally)'
            )
        correct = _normalise(predictions[qid]) == _normalise(question['answer'])
        n_correct += correct
        structural = (question.get('types') or {}).get('structural')
        if structural is None:
            untyped += 1
        else:
            by_type[structural].append(correct)
    if by_type and untyped:
        # A partial breakdown would silently leave questions out of the per-type numbers.
        raise ValueError(
            f'{untyped} of {len(questions)} questions lack types.structural while the rest have it'
        )

    result: dict[str, float | dict[str, float]] = {'accuracy': 100.0 * n_correct / len(questions)}
    if by_type:
        result['per_structural_type'] = {
            t: 100.0 * sum(flags) / len(flags) for t, flags in sorted(by_type.items())
        }
    return result
