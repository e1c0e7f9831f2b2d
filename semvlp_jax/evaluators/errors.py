"""What the scorers share: their error type, how an error lists offending ids, and what counts
as a JSON integer id."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

SHOWN = 5  # how many offending ids an error message lists


class PredictionsError(ValueError):
    """Predictions (a results file, a submission, a predictions CSV) that do not match the
    questions or labels, or cannot be read."""


def is_json_int(value: Any) -> bool:
    """A JSON integer: JSON true/false load as bool, an int subclass, but they are never ids."""
    return isinstance(value, int) and not isinstance(value, bool)


def listing(ids: Iterable[str]) -> str:
    """ "'a', 'b', ... (7 in all)": the first SHOWN ids, sorted, and how many there are."""
    ids = sorted(ids)
    shown = ', '.join(repr(i) for i in ids[:SHOWN])
    more = f', ... ({len(ids)} in all)' if len(ids) > SHOWN else f' ({len(ids)} in all)'
    return shown + more


def check_one_prediction_each(
    predictions: Mapping[str, object], expected: Mapping[str, object], *, missing: str, unknown: str
) -> None:
    """Raises PredictionsError unless `predictions` has exactly the keys of `expected`: the
    missing ones after the words `missing`, the unknown ones after `unknown`."""
    absent = expected.keys() - predictions.keys()
    if absent:
        raise PredictionsError(f'{missing} {listing(absent)}')
    extra = predictions.keys() - expected.keys()
    if extra:
        raise PredictionsError(f'{unknown} {listing(extra)}')
