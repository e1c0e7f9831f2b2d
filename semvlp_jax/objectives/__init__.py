"""Objective registry; importing this package registers every built-in objective."""

from semvlp_jax.objectives import semvlp  # noqa: F401  (registers mlm, mop, itm, qa)
from semvlp_jax.objectives.registry import OBJECTIVES, Objective, get, register

__all__ = ['OBJECTIVES', 'Objective', 'get', 'register']
