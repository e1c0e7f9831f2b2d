"""The device mesh, from config: named axes `data`, `fsdp`, `tensor`.

`config.mesh` gives each axis a size; one axis may be -1 and takes whatever the device count
leaves. Axis types are Auto: the compiler propagates shardings from the parameters and the batch
(explicit axis types would make every tensor-parallel kernel a sharding type error).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import jax

MESH_AXES = ('data', 'fsdp', 'tensor')
# The batch is split over these axes together (data parallel and FSDP both split examples).
BATCH_AXES = ('data', 'fsdp')


def mesh_shape(axes: Mapping[str, int], num_devices: int) -> tuple[int, ...]:
    """Sizes for MESH_AXES with -1 filled; ValueError naming `config.mesh.<axis>` if impossible."""
    unknown = sorted(set(axes) - set(MESH_AXES))
    if unknown:
        raise ValueError(f'config.mesh.{unknown[0]}: unknown mesh axis; expected {MESH_AXES}')
    sizes = [int(axes.get(name, 1)) for name in MESH_AXES]
    for name, size in zip(MESH_AXES, sizes):
        if size == 0 or size < -1:
            raise ValueError(f'config.mesh.{name}={size} must be a positive size or -1')
    if sizes.count(-1) > 1:
        raise ValueError('config.mesh: at most one axis may be -1')
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if num_devices % known:
            raise ValueError(
                f'config.mesh={dict(zip(MESH_AXES, sizes))}: {num_devices} devices do not divide '
                f'by the fixed axes (product {known})'
            )
        sizes[sizes.index(-1)] = num_devices // known
    if math.prod(sizes) != num_devices:
        raise ValueError(
            f'config.mesh={dict(zip(MESH_AXES, sizes))} needs {math.prod(sizes)} devices, '
            f'but there are {num_devices}'
        )
    return tuple(sizes)


def make_mesh(
    axes: Mapping[str, int], devices: Sequence[jax.Device] | None = None
) -> jax.sharding.Mesh:
    devices = list(devices) if devices is not None else jax.devices()
    shape = mesh_shape(axes, len(devices))
    return jax.make_mesh(
        shape, MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * len(MESH_AXES), devices=devices
    )


def batch_shards(mesh: jax.sharding.Mesh) -> int:
    """Into how many pieces the batch is split (data x fsdp)."""
    return math.prod(mesh.shape[a] for a in BATCH_AXES)
