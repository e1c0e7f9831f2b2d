"""AdamW whose parameters a training mode does not use receive no update of any kind.

PyTorch's Adam skips a parameter whose gradient is None: no step, no weight decay, no moment
decay, and its step count (hence its bias correction) stays put. optax, given a zero gradient,
would still decay the moments, apply weight decay and advance the count. So parameters are put
in groups by the set of modes that read them (e.g. cross-attention: `two`; the shared encoder:
`single+two`), each group has its own Adam state, and after an update in mode m the groups m does
not use get their old parameters and old Adam state back. Clipping uses the global norm over all
gradients (the unused ones are zero) and the learning rate follows the global step.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

from semvlp_jax import objectives as objectives_lib
from semvlp_jax.models.encoder import MODES
from semvlp_jax.models.semvlp import TWO_STREAM_ONLY

UNUSED = 'unused'
NO_DECAY_LEAVES = ('bias', 'scale')  # biases and LayerNorm parameters


def modes_of(step_mode: str) -> tuple[str, ...]:
    """The model modes a train-step mode runs: `both` runs single and two on the same batch."""
    return MODES if step_mode == 'both' else (step_mode,)


def _path_names(path) -> tuple[str, ...]:
    return tuple(str(getattr(k, 'key', getattr(k, 'idx', k))) for k in path)


def parameter_groups(params: Any, objectives: Mapping[str, Mapping[str, float]]) -> Any:
    """A tree like `params` whose leaves name the modes that read that parameter.

    `objectives` maps mode -> {objective name: weight}. A head is read in a mode iff an objective
    of that mode uses it; cross-attention only in `two`; everything else in every mode.
    """
    heads_by_mode = {
        mode: {head for name in objectives.get(mode, {}) for head in objectives_lib.get(name).heads}
        for mode in MODES
    }
    all_heads = {head for o in objectives_lib.OBJECTIVES.values() for head in o.heads}

    def label(path, _):
        names = _path_names(path)
        if names[0] in all_heads:
            modes = [m for m in MODES if names[0] in heads_by_mode[m]]
        elif TWO_STREAM_ONLY in names:
            modes = ['two']
        else:
            modes = list(MODES)
        return '+'.join(modes) or UNUSED

    return jax.tree_util.tree_map_with_path(label, params)


def learning_rate_schedule(config: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
    """Linear warmup from 0 to `learning_rate`, then linear or cosine decay to 0 at total_steps."""
    warmup = min(config.warmup_steps, total_steps)
    decay_steps = max(total_steps - warmup, 1)
    if config.decay == 'cosine':
        decay = optax.cosine_decay_schedule(config.learning_rate, decay_steps)
    elif config.decay == 'linear':
        decay = optax.linear_schedule(config.learning_rate, 0.0, decay_steps)
    else:
        raise ValueError(f"config.optimizer.decay={config.decay!r}; expected 'linear' or 'cosine'")
    warmup_schedule = optax.linear_schedule(0.0, config.learning_rate, warmup)
    return optax.join_schedules([warmup_schedule, decay], [warmup])


def _decay_mask(params):
    return jax.tree_util.tree_map_with_path(
        lambda path, _: _path_names(path)[-1] not in NO_DECAY_LEAVES, params
    )


@dataclasses.dataclass(frozen=True)
class ModeAwareOptimizer:
    """AdamW over parameter groups; `apply` leaves the groups a mode does not read untouched."""

    tx: optax.GradientTransformation
    groups: Any  # tree of group labels, like params
    learning_rate: optax.Schedule  # of the global step

    @classmethod
    def create(cls, config: ml_collections.ConfigDict, params: Any) -> ModeAwareOptimizer:
        opt = config.optimizer
        groups = parameter_groups(params, config.objectives)

        def adamw(label):
            if label == UNUSED:
                return optax.set_to_zero()
            return optax.chain(
                optax.scale_by_adam(opt.b1, opt.b2, opt.eps, mu_dtype=jnp.dtype(opt.mu_dtype)),
                optax.add_decayed_weights(opt.weight_decay, mask=_decay_mask),
            )

        schedule = learning_rate_schedule(opt, config.total_steps)
        tx = optax.chain(
            optax.clip_by_global_norm(opt.grad_clip_norm),
            optax.multi_transform(
                {label: adamw(label) for label in set(jax.tree.leaves(groups))}, groups
            ),
            optax.scale_by_learning_rate(schedule),
        )
        return cls(tx, groups, schedule)

    def init(self, params):
        return self.tx.init(params)

    def apply(self, grads, opt_state, params, *, mode: str):
        """One update in train-step mode `mode` ('single', 'two' or 'both')."""
        updates, new_state = self.tx.update(grads, opt_state, params)
        new_params = optax.apply_updates(params, updates)
        active = set(modes_of(mode))
        frozen = {
            label
            for label in set(jax.tree.leaves(self.groups))
            if not active & set(label.split('+'))
        }
        new_params = jax.tree.map(
            lambda label, old, new: old if label in frozen else new, self.groups, params, new_params
        )
        clip_state, groups_state, lr_state = new_state
        inner = {
            label: opt_state[1].inner_states[label] if label in frozen else s
            for label, s in groups_state.inner_states.items()
        }
        return new_params, (clip_state, groups_state._replace(inner_states=inner), lr_state)
