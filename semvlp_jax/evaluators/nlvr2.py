"""NLVR2 accuracy and consistency, and the official predictions CSV.

Identifiers are `{split}-{set_id}-{pair_id}-{sentence_id}` (e.g. 'dev-850-0-1'). One sentence is
paired with several image pairs; consistency is the share of sentences whose every pair is
predicted correctly, so examples are grouped by the identifier without its pair_id.
"""

from __future__ import annotations

import collections
import os
from collections.abc import Mapping

import numpy as np
from etils import epath

from semvlp_jax.evaluators.errors import PredictionsError, check_one_prediction_each


def parse_label(value) -> bool:
    """A label or prediction as a bool: a bool, or 'True'/'False' in any case (the jsonl form)."""
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered == 'true':
            return True
        if lowered == 'false':
            return False
    raise ValueError(f'not an NLVR2 label (expected True/False): {value!r}')


def group_key(identifier: str) -> str:
    """Sentence group: the identifier without pair_id ('dev-850-0-1' -> 'dev-850-1')."""
    fields = identifier.split('-') if isinstance(identifier, str) else []
    if len(fields) != 4 or not all(fields):
        raise PredictionsError(
            f'malformed NLVR2 identifier {identifier!r}: expected split-set_id-pair_id-sentence_id'
        )
    split, set_id, _, sentence_id = fields
    return f'{split}-{set_id}-{sentence_id}'


def score(predictions: Mapping[str, bool], labels: Mapping[str, bool]) -> dict[str, float]:
    """'accuracy' (% of examples correct) and 'consistency' (% of sentences with all correct).

    Every labelled identifier needs a prediction and every prediction a label; values go through
    `parse_label`, so a stray 'False' string is not silently truthy.
    """
    if not labels:
        raise ValueError('no labels to score against')
    groups = {identifier: group_key(identifier) for identifier in labels}
    check_one_prediction_each(
        predictions,
        labels,
        missing='no prediction for',
        unknown='predictions for unknown identifiers',
    )

    n_correct = 0
    group_ok: dict[str, bool] = collections.defaultdict(lambda: True)
    for identifier, label in labels.items():
        correct = parse_label(predictions[identifier]) == parse_label(label)
        n_correct += correct
        group_ok[groups[identifier]] &= correct
    return {
        'accuracy': 100.0 * n_correct / len(labels),
        'consistency': 100.0 * sum(group_ok.values()) / len(group_ok),
    }


def write_predictions(path: str | os.PathLike, predictions: Mapping[str, bool]) -> None:
    """Write the official predictions CSV: `identifier,True|False` lines, no header, sorted."""
    lines = []
    for identifier in sorted(predictions):
        if not isinstance(identifier, str) or any(c in identifier for c in ',\r\n'):
            raise PredictionsError(f'identifier {identifier!r} cannot be written to a CSV line')
        lines.append(f'{identifier},{parse_label(predictions[identifier])}\n')
    with epath.Path(path).open('w', encoding='utf-8') as f:
        f.writelines(lines)


def read_predictions(path: str | os.PathLike) -> dict[str, bool]:
    """Read a predictions CSV written by `write_predictions` (or by the official tools)."""
    predictions: dict[str, bool] = {}
    first_seen: dict[str, int] = {}
    with epath.Path(path).open(encoding='utf-8') as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            fields = [field.strip() for field in line.split(',')]
            if len(fields) != 2 or not fields[0]:
                raise PredictionsError(
                    f'{path}:{lineno}: expected "identifier,True|False", got {line.rstrip()!r}'
                )
            identifier, value = fields
            try:
                prediction = parse_label(value)
            except ValueError as e:
                raise PredictionsError(f'{path}:{lineno}: {e}') from None
            if identifier in predictions:
                raise PredictionsError(
                    f'{path}:{lineno}: duplicate identifier {identifier!r} '
                    f'(first on line {first_seen[identifier]})'
                )
            predictions[identifier] = prediction
            first_seen[identifier] = lineno
    return predictions
