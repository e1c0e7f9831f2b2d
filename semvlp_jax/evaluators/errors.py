"""What the GQA and NLVR2 scorers share: their error type and how an error lists offending ids."""

from __future__ import annotations

from collections.abc import Iterable

SHOWN = 5  # how many offending ids an error message lists


class PredictionsError(ValueError):
    """Predictions that do not match the questions or labels, or cannot be read."""


def listing(ids: Iterable[str]) -> str:
    """ "'a', 'b', ... (7 in all)": the first SHOWN ids, sorted, and how many there are."""
    ids = sorted(ids)
    shown = ', '.join(repr(i) for i in ids[:SHOWN])
    more = f', ... ({len(ids)} in all)' if len(ids) > SHOWN else f' ({len(ids)} in all)'
    return shown + more
