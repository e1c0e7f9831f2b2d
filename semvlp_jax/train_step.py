"""Pure step functions: no I/O, no Python state. Jitted once per (static) mode by the trainer.

    train_step(state, batch, *, mode) -> (state, metrics)
    eval_step(params, batch, rng, *, mode) -> metrics

The model enters as an NNX graphdef bound with functools.partial; parameters travel as a plain
pytree and are merged into the module inside the step.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax
from flax import nnx

from semvlp_jax import objectives as objectives_lib
from semvlp_jax.optimizer import ModeAwareOptimizer, modes_of

# Fields that belong to the image and move with it when ITM swaps in another image.
IMAGE_FIELDS = (
    'region_features',
    'region_boxes',
    'region_mask',
    'mop_positions',
    'mop_features',
    'mop_object_labels',
    'mop_attribute_labels',
    'mop_weights',
)


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # int32 scalar: number of updates applied
    params: Any  # pure pytree of arrays
    opt_state: Any
    rng: jax.Array  # base key; step keys are fold_in(rng, step), so resuming needs no RNG log


def make_itm_pairs(
    batch: Mapping[str, jax.Array], rng: jax.Array, negative_prob: float
) -> dict[str, jax.Array]:
    """With probability `negative_prob` per example, pairs its text with another example's image.

    The other image is drawn uniformly from the rest of the *global* batch (index i + offset,
    offset in 1..B-1, so never the example's own image). Adds `is_matched` [batch] (1 = own image).
    """
    size = batch['text_ids'].shape[0]
    swap_rng, offset_rng = jax.random.split(rng)
    swap = jax.random.bernoulli(swap_rng, negative_prob, (size,))
    offset = jax.random.randint(offset_rng, (size,), 1, max(size, 2))
    source = jnp.where(swap, (jnp.arange(size) + offset) % size, jnp.arange(size))
    paired = dict(batch)
    for field in IMAGE_FIELDS:
        if field in batch:
            paired[field] = jnp.take(batch[field], source, axis=0)
    paired['is_matched'] = (~swap).astype(jnp.int32)
    return paired


def mode_loss(
    params,
    batch,
    rng: jax.Array | None,
    *,
    mode: str,
    graphdef: nnx.GraphDef,
    objectives: Mapping[str, Mapping[str, float]],
) -> tuple[jax.Array, dict]:
    """Weighted sum of `mode`'s objectives; `rng=None` evaluates without dropout."""
    model = nnx.merge(graphdef, params)
    encoded = model(batch, mode=mode, rngs=None if rng is None else nnx.Rngs(dropout=rng))
    total, metrics = jnp.zeros((), jnp.float32), {}
    for name, weight in objectives[mode].items():
        loss, extra = objectives_lib.get(name).fn(model, encoded, batch)
        total += weight * loss
        metrics[f'{name}_loss'] = loss
        metrics.update(extra)
    metrics['loss'] = total
    return total, metrics


def train_step(
    state: TrainState,
    batch,
    *,
    mode: str,
    graphdef: nnx.GraphDef,
    optimizer: ModeAwareOptimizer,
    objectives: Mapping[str, Mapping[str, float]],
    itm_negative_prob: float,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One update in train-step mode `mode` ('single', 'two' or 'both').

    Metrics are keyed `<model mode>/<metric>` (e.g. `two/mlm_accuracy`) plus `learning_rate` and
    `grad_norm`.
    """
    pair_rng, *dropout_rngs = jax.random.split(jax.random.fold_in(state.rng, state.step), 3)
    batch = make_itm_pairs(batch, pair_rng, itm_negative_prob)

    def loss_fn(params):
        total, metrics = jnp.zeros((), jnp.float32), {}
        for model_mode, rng in zip(modes_of(mode), dropout_rngs):
            loss, mode_metrics = mode_loss(
                params, batch, rng, mode=model_mode, graphdef=graphdef, objectives=objectives
            )
            total += loss
            metrics.update({f'{model_mode}/{k}': v for k, v in mode_metrics.items()})
        return total, metrics

    (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    params, opt_state = optimizer.apply(grads, state.opt_state, state.params, mode=mode)
    metrics['learning_rate'] = optimizer.learning_rate(state.step)
    metrics['grad_norm'] = optax.tree.norm(grads)
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics


def eval_step(
    params,
    batch,
    rng: jax.Array,
    *,
    mode: str,
    graphdef: nnx.GraphDef,
    objectives: Mapping[str, Mapping[str, float]],
    itm_negative_prob: float,
) -> dict[str, jax.Array]:
    """Metrics of one model mode on one batch, without dropout; `rng` fixes the ITM pairing."""
    batch = make_itm_pairs(batch, rng, itm_negative_prob)
    return mode_loss(params, batch, None, mode=mode, graphdef=graphdef, objectives=objectives)[1]
