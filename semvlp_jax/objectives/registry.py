"""Objectives registered by name.

An objective is a pure function `(model, encoded, batch) -> (loss_terms, metrics)`: it applies
the heads it needs to the encoder output and returns its loss as a tuple of `Ratio` terms (the
objective's loss is the sum of their values) and a dict of `Ratio` metrics.
Registering it also declares the head module classes it reads (`MaskedLanguageModelHead`, ...);
the optimizer finds the model's top-level module of each class, so it knows which parameters a
mode touches. The function itself reaches its heads as attributes (`model.mlm_head`).

An objective that distils from the momentum teacher (SIMLA's) also registers `teacher`, a
function of the same signature run on the teacher's model and encoding, without gradient: what
it returns reaches the objective as `encoded.momentum.targets[name]` (`simla/targets.py`).

An objective that makes its own ITM negatives (`own_negatives`: SIMLA's and MVPTR's pair every
text with its own image and pick the negatives themselves) tells the train step to swap no
images in the modes that run it; its draws use `encoded.sample_key`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import jax
from flax import nnx

from semvlp_jax.models.semvlp import Encoded, SemVLP
from semvlp_jax.objectives.losses import Ratio

LossTerms = tuple[Ratio, ...]
Metrics = dict[str, Ratio]


class ObjectiveFn(Protocol):
    def __call__(
        self, model: SemVLP, encoded: Encoded, batch: Mapping[str, jax.Array]
    ) -> tuple[LossTerms, Metrics]: ...


@dataclasses.dataclass(frozen=True)
class Objective:
    name: str
    fn: ObjectiveFn
    heads: tuple[type[nnx.Module], ...]  # classes of the model's top-level modules it reads
    teacher: Callable[..., Any] | None = None  # (teacher model, its encoding, batch) -> targets
    own_negatives: bool = False  # pairs every text with its own image; picks its negatives


OBJECTIVES: dict[str, Objective] = {}


def register(
    name: str,
    *,
    heads: tuple[type[nnx.Module], ...],
    teacher: Callable[..., Any] | None = None,
    own_negatives: bool = False,
):
    """Decorator: `@register('mlm', heads=(MaskedLanguageModelHead,))`."""

    def wrap(fn: ObjectiveFn) -> ObjectiveFn:
        if name in OBJECTIVES:
            raise ValueError(f'objective {name!r} registered twice')
        OBJECTIVES[name] = Objective(name, fn, heads, teacher, own_negatives)
        return fn

    return wrap


def get(name: str) -> Objective:
    if name not in OBJECTIVES:
        raise KeyError(f'unknown objective {name!r}; registered: {sorted(OBJECTIVES)}')
    return OBJECTIVES[name]
