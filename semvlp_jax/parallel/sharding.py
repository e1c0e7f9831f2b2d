"""Logical axis rules: how parameters named with logical axes are laid out on the mesh.

Model code names axes (`embed`, `heads`, `mlp`, `vocab`, ...); one rules table, chosen by a
preset or given in full in the config, maps each logical name to a mesh axis (or to nothing:
replicated). Presets:

  data_parallel  every parameter replicated; the batch split over data x fsdp
  fsdp           parameters and optimizer state split along `embed` over `fsdp` (ZeRO-3 style)
  fsdp_tensor    fsdp, plus attention heads and MLP hidden units split over `tensor`
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from semvlp_jax.parallel.mesh import BATCH_AXES

Rules = tuple[tuple[str, str | None], ...]

PRESETS: dict[str, Rules] = {
    'data_parallel': (),
    'fsdp': (('embed', 'fsdp'),),
    'fsdp_tensor': (('embed', 'fsdp'), ('heads', 'tensor'), ('mlp', 'tensor')),
}


def rules_from_config(parallel: Mapping[str, Any]) -> Rules:
    """`config.parallel.rules` if given, else the table of `config.parallel.preset`."""
    if parallel.get('rules'):
        return tuple((str(logical), mesh_axis) for logical, mesh_axis in parallel['rules'])
    preset = parallel.get('preset', 'data_parallel')
    if preset not in PRESETS:
        raise ValueError(f'config.parallel.preset={preset!r}; expected one of {sorted(PRESETS)}')
    return PRESETS[preset]


def logical_to_mesh(logical: Sequence[str | None], rules: Rules) -> P:
    """P('embed', 'mlp') -> P('fsdp', 'tensor') under `rules`; a mesh axis is used at most once."""
    table = dict(rules)
    used, spec = set(), []
    for name in logical:
        axis = table.get(name) if name is not None else None
        if axis in used:
            axis = None  # e.g. an [embed, embed] kernel: shard only its first dimension
        used.add(axis)
        spec.append(axis)
    return P(*spec)


def param_specs(logical_specs: Any, shapes: Any, mesh: jax.sharding.Mesh, rules: Rules) -> Any:
    """Mesh PartitionSpecs for parameters, checking that every split dimension divides evenly.

    logical_specs: tree of P(logical names) (from `nnx.get_partition_spec`); shapes: same tree
    of arrays or ShapeDtypeStructs.
    """

    def spec(path, logical, shape):
        mesh_spec = logical_to_mesh(tuple(logical), rules)
        for dim, axis in zip(shape.shape, mesh_spec):
            if axis is not None and dim % mesh.shape[axis]:
                name = jax.tree_util.keystr(path, simple=True, separator='/')
                raise ValueError(
                    f'parameter {name} {tuple(shape.shape)}: dimension {dim} '
                    f'(logical axis {logical}) does not split over mesh axis {axis!r} of size '
                    f'{mesh.shape[axis]}; change config.parallel or the model size'
                )
        return mesh_spec

    return jax.tree_util.tree_map_with_path(
        spec, logical_specs, shapes, is_leaf=lambda x: isinstance(x, P)
    )


def state_shardings(
    mesh: jax.sharding.Mesh, abstract_state, specs: Any, *, tx: optax.GradientTransformation
) -> Any:
    """NamedShardings for a TrainState: parameters (and the momentum teacher) per `specs`, each
    optimizer moment like its parameter, everything else (step, counters, Adam counts, RNG key,
    feature queues) replicated.

    `tx` is the optimizer that made `abstract_state.opt_state`; optax's `tree_map_params` finds
    the copies of the parameter tree inside its state.
    """
    replicated = NamedSharding(mesh, P())
    is_spec = lambda x: isinstance(x, P)  # noqa: E731
    params = jax.tree.map(lambda s: NamedSharding(mesh, s), specs, is_leaf=is_spec)
    # A group's moments hold MaskedNode where a parameter belongs to another group.
    is_masked = lambda x: isinstance(x, optax.MaskedNode)  # noqa: E731
    opt_state = optax.tree_map_params(
        tx,
        lambda moment, sharding: moment if is_masked(moment) else sharding,
        abstract_state.opt_state,
        params,
        transform_non_params=lambda _: replicated,
        is_leaf=is_masked,
    )
    everything_replicated = jax.tree.map(lambda _: replicated, abstract_state)
    # The momentum teacher (when the state has one) like the parameters; its queues replicated.
    teacher = None if getattr(abstract_state, 'teacher', None) is None else params
    return everything_replicated.replace(params=params, opt_state=opt_state, teacher=teacher)


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
    """Examples split over data x fsdp; every other dimension whole."""
    return NamedSharding(mesh, P(BATCH_AXES))
