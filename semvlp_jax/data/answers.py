"""Soft answer targets from ten annotator answers (VQA)."""

from __future__ import annotations

import collections
from collections.abc import Sequence

import numpy as np

# Score for 0, 1, 2, 3 and >=4 annotators agreeing: exactly the official leave-one-out accuracy
# mean_{10 subsets of 9} min(1, matches/3); min(1, count/3) would only approximate it.
SOFT_SCORES = (0.0, 0.3, 0.6, 0.9, 1.0)


def soft_score(count: int) -> float:
    return SOFT_SCORES[min(count, 4)]


def answer_scores(answers: Sequence[str], vocabulary: dict[str, int]) -> np.ndarray:
    """[len(vocabulary)] float32 target scores; answers outside the vocabulary are dropped."""
    scores = np.zeros(len(vocabulary), np.float32)
    for answer, count in collections.Counter(answers).items():
        if answer in vocabulary:
            scores[vocabulary[answer]] = soft_score(count)
    return scores
