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
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx

from semvlp_jax import objectives as objectives_lib
from semvlp_jax.models.encoder import MODE_SPECIFIC, MODES

UNUSED = 'unused'
NO_DECAY_LEAVES = ('bias', 'scale')  # biases and LayerNorm parameters
# Names of the steps of the optimizer's chain: its state is a dict with these keys.
CLIP, GROUPS, LEARNING_RATE = 'clip', 'groups', 'learning_rate'

# Decay after warmup, from the peak learning rate to 0 over the given number of steps.
DECAY_SCHEDULES: dict[str, Callable[[float, int], optax.Schedule]] = {
    'linear': lambda peak, steps: optax.linear_schedule(peak, 0.0, steps),
    'cosine': optax.cosine_decay_schedule,
}


def modes_of(step_mode: str) -> tuple[str, ...]:
    """The model modes a train-step mode runs: `both` runs single and two on the same batch."""
    return ('single', 'two') if step_mode == 'both' else (step_mode,)


def labelled_modes(objectives: Mapping[str, Mapping[str, float]]) -> tuple[str, ...]:
    """The modes parameter groups are labelled over: SemVLP's single and two always (so a
    fine-tune in either mode labels its parameters alike), fuse and staged when the config runs
    them."""
    return tuple(m for m in MODES if m in ('single', 'two') or objectives.get(m))


def _readers(model: nnx.Module, objectives: Mapping[str, Mapping[str, float]]) -> dict:
    """{module path: modes that read it} for the modules whose readers are declared.

    A head (a top-level module of a class some registered objective declares) is read by the
    modes whose objectives declare its class; a module of a `MODE_SPECIFIC` class by the
    modes listed there.
    """
    declared = {cls for o in objectives_lib.OBJECTIVES.values() for cls in o.heads}
    children = list(nnx.iter_children(model))
    for cls in declared:
        holders = [name for name, child in children if isinstance(child, cls)]
        if len(holders) > 1:
            raise ValueError(
                f'objectives declare the head class {cls.__name__} but the model holds one at '
                f'each of {holders}: give each head its own class'
            )
    readers = {}
    for name, child in children:
        classes = {cls for cls in declared if isinstance(child, cls)}
        if classes:
            readers[(name,)] = {
                mode
                for mode in labelled_modes(objectives)
                for objective in objectives.get(mode, {})
                if classes & set(objectives_lib.get(objective).heads)
            }
    for path, module in nnx.iter_modules(model):
        for cls, modes in MODE_SPECIFIC.items():
            if isinstance(module, cls):
                readers[path] = set(modes)
    return readers


def parameter_groups(model: nnx.Module, objectives: Mapping[str, Mapping[str, float]]) -> Any:
    """A tree like the model's parameters (`nnx.to_pure_dict(nnx.state(model, nnx.Param))`)
    whose leaves name the modes that read that parameter: 'single+two', 'two', ... or 'unused'.

    `model` may be abstract (`nnx.eval_shape`); `objectives` maps mode -> {objective name:
    weight}. A parameter is read in a mode iff every module around it whose readers are declared
    (see `_readers`) is read in that mode; everything else is read in every mode.
    """
    readers = _readers(model, objectives)
    universe = labelled_modes(objectives)

    def label(path, _) -> str:
        modes = set(universe)
        for end in range(len(path)):
            modes &= readers.get(tuple(path[:end]), modes)
        return '+'.join(m for m in universe if m in modes) or UNUSED

    return nnx.to_pure_dict(nnx.map_state(label, nnx.state(model, nnx.Param)))


def learning_rate_schedule(config: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
    """Linear warmup from 0 to `learning_rate`, then linear or cosine decay to 0 at total_steps."""
    warmup = min(config.warmup_steps, total_steps)
    decay = DECAY_SCHEDULES[config.decay](config.learning_rate, max(total_steps - warmup, 1))
    warmup_schedule = optax.linear_schedule(0.0, config.learning_rate, warmup)
    return optax.join_schedules([warmup_schedule, decay], [warmup])


def _decay_mask(params):
    return jax.tree_util.tree_map_with_path(
        lambda path, _: jax.tree_util.keystr(path[-1:], simple=True) not in NO_DECAY_LEAVES,
        params,
    )


@dataclasses.dataclass(frozen=True)
class ModeAwareOptimizer:
    """AdamW over parameter groups; `apply` leaves the groups a mode does not read untouched."""

    tx: optax.GradientTransformation  # a named chain: CLIP, GROUPS, LEARNING_RATE
    groups: Any  # tree of group labels, like params
    learning_rate: optax.Schedule  # of the global step

    @classmethod
    def create(cls, config: ml_collections.ConfigDict, model: nnx.Module) -> ModeAwareOptimizer:
        """The optimizer of `model` (which may be abstract: only its structure is read)."""
        opt = config.optimizer
        groups = parameter_groups(model, config.objectives)

        def adamw(label):
            if label == UNUSED:
                return optax.set_to_zero()
            return optax.chain(
                optax.scale_by_adam(opt.b1, opt.b2, opt.eps, mu_dtype=jnp.dtype(opt.mu_dtype)),
                optax.add_decayed_weights(opt.weight_decay, mask=_decay_mask),
            )

        schedule = learning_rate_schedule(opt, config.total_steps)
        tx = optax.named_chain(
            (CLIP, optax.clip_by_global_norm(opt.grad_clip_norm)),
            (
                GROUPS,
                # Labels in sorted order, not a set's: the traced program must be the same in
                # every process (hosts of one run, and the compilation cache across runs).
                optax.multi_transform(
                    {label: adamw(label) for label in sorted(set(jax.tree.leaves(groups)))}, groups
                ),
            ),
            (LEARNING_RATE, optax.scale_by_learning_rate(schedule)),
        )
        return cls(tx, groups, schedule)

    def init(self, params):
        return self.tx.init(params)

    @staticmethod
    def group_states(opt_state) -> Mapping[str, Any]:
        """{group label: that group's optimizer state (Adam moments and count)}."""
        return opt_state[GROUPS].inner_states

    def apply(self, grads, opt_state, params, *, step_mode: str):
        """One update in train-step mode `step_mode` ('single', 'two', 'both', 'fuse' or
        'staged')."""
        updates, new_state = self.tx.update(grads, opt_state, params)
        new_params = optax.apply_updates(params, updates)
        active = set(modes_of(step_mode))
        frozen = {
            label
            for label in set(jax.tree.leaves(self.groups))
            if not active & set(label.split('+'))
        }
        new_params = jax.tree.map(
            lambda label, old, new: old if label in frozen else new, self.groups, params, new_params
        )
        old_groups = self.group_states(opt_state)
        inner = {
            label: old_groups[label] if label in frozen else s
            for label, s in self.group_states(new_state).items()
        }
        new_state = new_state.copy()  # the chain's OrderedDict, in its order
        new_state[GROUPS] = new_state[GROUPS]._replace(inner_states=inner)
        return new_params, new_state
