"""What the momentum teacher gives a SIMLA step: the distillation weight, the feature queues and
the teacher's targets for this batch.

The train step runs the teacher (the EMA parameters, no dropout) once on the batch in the fuse
mode and asks each objective that registered a `teacher` function for its targets; all of it
is held constant (stop_gradient). Evaluation, which has no teacher, uses the model as its own
teacher with alpha = 0 and empty queues: its losses are the hard losses over the batch alone.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import flax
import jax
from flax import nnx

from semvlp_jax import objectives as objectives_lib
from semvlp_jax.simla.queues import FeatureQueues


@flax.struct.dataclass
class Momentum:
    alpha: jax.Array  # float32 scalar: the teacher's share of every soft target
    queues: FeatureQueues
    targets: dict[str, Any]  # objective name -> what its `teacher` function returned


def queues_or_empty(queues: FeatureQueues | None, targets: dict[str, Any]) -> FeatureQueues:
    """`queues`, or (a run without queues, or evaluation) empty ones of the features' width:
    the contrast is then over the batch alone."""
    if queues is not None:
        return queues
    features = targets.get('itc_momentum')
    return FeatureQueues.empty(0, features['text'].shape[-1] if features else 1)


def teacher_targets(
    teacher_params, batch, *, graphdef: nnx.GraphDef, names: Iterable[str]
) -> dict[str, Any]:
    """{objective name: targets} of the objectives among `names` that register a teacher."""
    teacher = nnx.merge(graphdef, teacher_params)
    encoded = teacher(batch, mode='fuse', rngs=None)
    targets = {}
    for name in names:
        make = objectives_lib.get(name).teacher
        if make is not None:
            targets[name] = jax.lax.stop_gradient(make(teacher, encoded, batch))
    return targets
