"""The momentum (EMA) teacher and the distillation weight.

The teacher is a second copy of the parameters in the train state: after each optimizer step
`teacher <- m * teacher + (1 - m) * params` (ALBEF and SIMLA: m = 0.995), never touched by the
optimizer, so no weight decay, no clipping and no learning-rate schedule reach it. Under jit the
update is elementwise on arrays sharded like the parameters, so the teacher keeps their sharding.

Distillation mixes the teacher into the targets with weight alpha, ramped linearly from 0 over
the first `ramp_steps` steps (the papers: one epoch) to its final value (0.4): early on the
teacher is no better than the student.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp


def ema_update(teacher: Any, params: Any, momentum: float | jax.Array) -> Any:
    """`momentum * teacher + (1 - momentum) * params`, leaf by leaf, in the teacher's dtype.

    The update is computed in float32 whatever the dtype, so a bfloat16 teacher still moves
    when (1 - momentum) * (params - teacher) is below its precision of one step."""
    momentum = jnp.asarray(momentum, jnp.float32)

    def update(t, p):
        moved = momentum * t.astype(jnp.float32) + (1 - momentum) * p.astype(jnp.float32)
        return moved.astype(t.dtype)

    return jax.tree.map(update, teacher, params)


def distillation_alpha(step: jax.Array | int, final: float, ramp_steps: int) -> jax.Array:
    """alpha at `step`: `final * min(1, step / ramp_steps)`, `final` from the start when
    `ramp_steps` is 0."""
    if ramp_steps <= 0:
        return jnp.asarray(final, jnp.float32)
    fraction = jnp.minimum(1.0, jnp.asarray(step, jnp.float32) / ramp_steps)
    return final * fraction
