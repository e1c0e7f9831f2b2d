"""Objective registry; importing this package registers every built-in objective."""

from semvlp_jax.objectives import (  # noqa: F401  (registers the objectives)
    contrastive,  # itc
    downstream,  # nlvr2
    semvlp,  # mlm, mop, itm, qa
)
from semvlp_jax.objectives.registry import OBJECTIVES, Objective, get, register

__all__ = ['OBJECTIVES', 'Objective', 'get', 'register']
