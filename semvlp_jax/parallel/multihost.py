"""Joining the processes of a multi-host run into one JAX runtime."""

from __future__ import annotations

import jax
import orbax.checkpoint  # noqa: F401  (defines the barrier flag set below)
from absl import flags


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> None:
    """Calls `jax.distributed.initialize` before anything touches a device.

    On a Cloud TPU slice pass nothing: JAX discovers the hosts. Elsewhere (several CPU or GPU
    processes, e.g. tests on 127.0.0.1) pass all three; CPU processes then use gloo for their
    collectives.
    """
    if coordinator_address is not None:
        if num_processes is None or process_id is None:
            raise ValueError('--coordinator_address needs --num_processes and --process_id too')
        jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.distributed.initialize(coordinator_address, num_processes, process_id)
    # orbax's default barrier is a device collective, issued also from an async save's finalize
    # thread alongside the training thread's collectives; the distributed client's barrier is a
    # key-value wait that involves no device.
    flags.FLAGS.experimental_orbax_use_distributed_barrier = True
