"""Objectives registered by name.

An objective is a pure function `(model, encoded, batch) -> (loss_terms, metrics)`: it applies
the heads it needs to the encoder output and returns its loss as a tuple of `Ratio` terms (the
objective's loss is the sum of their values) and a dict of `Ratio` metrics.
Registering it also names the model heads (attribute names) it uses, so the optimizer knows which
parameters a mode touches.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax

ObjectiveFn = Callable[..., tuple[jax.Array, dict[str, jax.Array]]]


@dataclasses.dataclass(frozen=True)
class Objective:
    name: str
    fn: ObjectiveFn
    heads: tuple[str, ...]


OBJECTIVES: dict[str, Objective] = {}


def register(name: str, *, heads: tuple[str, ...]):
    """Decorator: `@register('mlm', heads=('mlm_head',))`."""

    def wrap(fn: ObjectiveFn) -> ObjectiveFn:
        if name in OBJECTIVES:
            raise ValueError(f'objective {name!r} registered twice')
        OBJECTIVES[name] = Objective(name, fn, heads)
        return fn

    return wrap


def get(name: str) -> Objective:
    if name not in OBJECTIVES:
        raise KeyError(f'unknown objective {name!r}; registered: {sorted(OBJECTIVES)}')
    return OBJECTIVES[name]
