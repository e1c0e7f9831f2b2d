"""The gcloud commands of a Cloud TPU run, each built by a pure function as an argument list.

A run's capacity is either a plain TPU VM (`tpu-vm create`, on demand) or a queued resource
(`queued-resources create`) holding one TPU VM node of the same name. Spot and reserved capacity
always go through a queued resource: the request waits in the queue until capacity is free instead
of failing at once, and after a preemption a new request is how the run gets back in line.

Whatever created it, the node is reached with `tpu-vm scp` / `tpu-vm ssh NAME`.
"""

from __future__ import annotations

import dataclasses
import shlex

# The runtime (TPU VM image) per accelerator family: `FAMILY-SIZE`, e.g. v5litepod-16, v6e-8.
RUNTIME_VERSIONS = {
    'v6e': 'v2-alpha-tpuv6e',
    'v5p': 'v2-alpha-tpuv5',
    'v5e': 'v2-alpha-tpuv5-lite',
    'v5litepod': 'v2-alpha-tpuv5-lite',
    'v4': 'tpu-ubuntu2204-base',
    'v3': 'tpu-ubuntu2204-base',
    'v2': 'tpu-ubuntu2204-base',
}

# What `describe --format=value(...)` reports once the capacity can run, and the states it
# never comes back from by itself (waiting for one of them is pointless).
QUEUED_READY = 'ACTIVE'
QUEUED_LOST = frozenset({'FAILED', 'SUSPENDING', 'SUSPENDED', 'DELETING'})
VM_READY = 'READY'
VM_LOST = frozenset({'PREEMPTED', 'TERMINATED', 'STOPPING', 'STOPPED', 'DELETING'})

# Where the code and its virtual environment live on every worker (relative to the home directory).
REMOTE_TARBALL = 'semvlp_jax.tar.gz'
REMOTE_CODE = '~/semvlp_jax'
REMOTE_VENV = '~/semvlp_venv'
# The TPU images are Ubuntu 22.04, whose python3 is 3.10; the package needs >= 3.11, so uv
# provides the interpreter of the virtual environment and pip installs into it.
PYTHON_VERSION = '3.11'

# Unpack the code afresh, make the virtual environment once, install the package with its TPU
# extra (jax[tpu], GCS paths).
INSTALL_SCRIPT = ' && '.join(
    [
        f'rm -rf {REMOTE_CODE}',
        f'mkdir -p {REMOTE_CODE}',
        f'tar -xzf ~/{REMOTE_TARBALL} -C {REMOTE_CODE}',
        'export PATH="$HOME/.local/bin:$PATH"',
        '{ command -v uv >/dev/null || python3 -m pip install --user -q uv; }',
        f'{{ [ -x {REMOTE_VENV}/bin/pip ] || uv venv -q --seed --python {PYTHON_VERSION} {REMOTE_VENV}; }}',
        f'cd {REMOTE_CODE}',
        f'{REMOTE_VENV}/bin/pip install -q --upgrade pip',
        f'{REMOTE_VENV}/bin/pip install -q -e ".[tpu]"',
    ]
)

# Only one process may open the TPU. A trainer left over from a crashed or interrupted run (its ssh
# gone, the process not) still holds /dev/accel* (v4) or /dev/vfio/* (v5e, v5p, v6e), and a stale
# /tmp/libtpu_lockfile makes libtpu report "TPU in use" although nothing holds it.
PREFLIGHT_SCRIPT = (
    'sudo lsof -t /dev/accel* /dev/vfio/* 2>/dev/null | sort -u | xargs -r sudo kill -9; '
    'sudo rm -f /tmp/libtpu_lockfile; true'
)

# A connection whose peer has gone silent (a host preempted mid-run) ends within about three
# minutes, with ssh's status 255, instead of hanging.
SSH_KEEPALIVE = ('--ssh-flag=-oServerAliveInterval=30', '--ssh-flag=-oServerAliveCountMax=6')


class LaunchError(Exception):
    """A launch step cannot go on; the message says why and what to do."""


def runtime_version(accelerator_type: str) -> str:
    """The TPU VM runtime for an accelerator type such as `v5litepod-16` or `v6e-8`."""
    family, _, size = accelerator_type.lower().rpartition('-')
    if size.isdigit() and family in RUNTIME_VERSIONS:
        return RUNTIME_VERSIONS[family]
    known = ', '.join(RUNTIME_VERSIONS)
    raise LaunchError(
        f'unknown accelerator type {accelerator_type!r}: expected FAMILY-SIZE with FAMILY one of '
        f'{known} (e.g. v5litepod-16, v6e-8), or pass --runtime-version'
    )


@dataclasses.dataclass(frozen=True)
class Capacity:
    """A TPU slice: a TPU VM NAME, or a queued resource NAME whose node is also called NAME."""

    name: str
    zone: str
    project: str | None = None
    accelerator_type: str | None = None
    runtime_version: str | None = None
    queued: bool = False
    provisioning: str = 'on-demand'  # or 'spot', 'reserved' (queued resources only)

    def __post_init__(self):
        if self.provisioning not in ('on-demand', 'spot', 'reserved'):
            raise ValueError(f'unknown provisioning {self.provisioning!r}')
        if self.provisioning != 'on-demand' and not self.queued:
            raise ValueError(f'{self.provisioning} capacity goes through a queued resource')

    @property
    def kind(self) -> str:
        return 'queued resource' if self.queued else 'TPU VM'

    @property
    def ready_state(self) -> str:
        return QUEUED_READY if self.queued else VM_READY

    @property
    def lost_states(self) -> frozenset[str]:
        return QUEUED_LOST if self.queued else VM_LOST

    def __str__(self) -> str:
        return f'{self.kind} {self.name}'


def _group(capacity: Capacity) -> list[str]:
    return ['gcloud', 'compute', 'tpus', 'queued-resources' if capacity.queued else 'tpu-vm']


def _vm() -> list[str]:
    return ['gcloud', 'compute', 'tpus', 'tpu-vm']


def _where(capacity: Capacity) -> list[str]:
    project = ['--project', capacity.project] if capacity.project else []
    return ['--zone', capacity.zone, *project]


def create(capacity: Capacity) -> list[str]:
    if not capacity.accelerator_type or not capacity.runtime_version:
        raise LaunchError(f'creating the {capacity} needs --accelerator-type')
    if not capacity.queued:
        return [
            *_vm(),
            'create',
            capacity.name,
            *_where(capacity),
            '--accelerator-type',
            capacity.accelerator_type,
            '--version',
            capacity.runtime_version,
        ]
    tier = [] if capacity.provisioning == 'on-demand' else [f'--{capacity.provisioning}']
    return [
        *_group(capacity),
        'create',
        capacity.name,
        *_where(capacity),
        '--runtime-version',
        capacity.runtime_version,
        '--accelerator-type',
        capacity.accelerator_type,
        '--node-id',
        capacity.name,
        *tier,
    ]


def describe_state(capacity: Capacity) -> list[str]:
    field = 'state.state' if capacity.queued else 'state'
    return [
        *_group(capacity),
        'describe',
        capacity.name,
        *_where(capacity),
        f'--format=value({field})',
    ]


def describe_node(capacity: Capacity) -> list[str]:
    """The node as JSON; its `networkEndpoints` list has one entry per worker."""
    return [*_vm(), 'describe', capacity.name, *_where(capacity), '--format=json']


def delete(capacity: Capacity) -> list[str]:
    force = ['--force'] if capacity.queued else []
    return [*_group(capacity), 'delete', capacity.name, *_where(capacity), *force, '--quiet']


def copy_code(capacity: Capacity, tarball: str) -> list[str]:
    """The code tarball to the home directory of every worker."""
    destination = f'{capacity.name}:{REMOTE_TARBALL}'
    return [*_vm(), 'scp', tarball, destination, *_where(capacity), '--worker=all']


def ssh_all(capacity: Capacity, script: str) -> list[str]:
    return [*_vm(), 'ssh', capacity.name, *_where(capacity), '--worker=all', '--command', script]


def ssh_worker(capacity: Capacity, worker: int, script: str) -> list[str]:
    return [
        *_vm(),
        'ssh',
        capacity.name,
        *_where(capacity),
        f'--worker={worker}',
        *SSH_KEEPALIVE,
        '--command',
        script,
    ]


def trainer_script(config: str, workdir: str, extra_args: list[str]) -> str:
    """The trainer, as every worker runs it: the same command, JAX finds the other hosts."""
    args = ['--config', config, '--workdir', workdir, '--multihost', *extra_args]
    return (
        f'cd {REMOTE_CODE} && exec {REMOTE_VENV}/bin/python -m semvlp_jax.main {shlex.join(args)}'
    )
