"""Objective registry; importing this package registers every built-in objective."""

from semvlp_jax.objectives import (  # noqa: F401  (registers the objectives)
    contrastive,  # itc
    downstream,  # nlvr2
    mvptr,  # vsc, mcr, itm_hardest, wpg
    semvlp,  # mlm, mop, itm, qa
    simla,  # itc_momentum, itm_hard, xmm_text, xmm_image, psl
)
from semvlp_jax.objectives.registry import OBJECTIVES, Objective, get, register

__all__ = ['OBJECTIVES', 'Objective', 'get', 'register']
