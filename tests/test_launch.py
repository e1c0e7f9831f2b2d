"""The Cloud TPU launcher against a stub `gcloud`: the exact commands, in order, and what happens
when capacity is slow, lost or preempted, or a worker fails. No network, no JAX.

The stub (first on PATH) appends its argv as a JSON line to a record file and answers from a JSON
file of canned answers: per resource, the sequence of states its `describe` reports (the last one
repeats); the node's number of workers; per worker, per attempt, the lines an ssh prints, how long
it then sleeps, and its exit status (an attempt starts with a preflight; `together`: wait until
every worker of the attempt has started, so that all of them are recorded).
"""

import dataclasses
import json
import os
import pathlib
import shlex
import subprocess
import sys
import tarfile
import time

import pytest

from launch import gcloud, tpu
from launch.gcloud import Capacity, LaunchError

ROOT = pathlib.Path(__file__).resolve().parents[1]

STUB = r"""
import json, os, sys, time

args = sys.argv[1:]
record = os.environ['GCLOUD_STUB_RECORD']
if args[3] == 'ssh' and '--worker=all' not in args:  # its pid first: recorded means findable
    with open(record + '.pids', 'a') as f:
        f.write(f'{os.getpid()}\n')
with open(record, 'a') as f:
    f.write(json.dumps(args) + '\n')
with open(os.environ['GCLOUD_STUB_ANSWERS']) as f:
    answers = json.load(f)
with open(record) as f:
    calls = [json.loads(line) for line in f]


group, verb, name = args[2], args[3], args[4]
formats = [a for a in args if a.startswith('--format=')]
worker = next((a.split('=', 1)[1] for a in args if a.startswith('--worker=')), None)
if verb == 'describe' and formats[0].startswith('--format=value('):
    states = answers['states'][f'{group}/{name}']
    asked = sum(1 for call in calls if call[2:5] == args[2:5] and call[-1] == formats[0]) - 1
    state = states[min(asked, len(states) - 1)]
    if state is None:
        sys.exit('ERROR: (gcloud) NOT_FOUND: ' + name)
    print(state)
elif verb == 'describe':
    endpoints = [{'ipAddress': f'10.0.0.{i}'} for i in range(answers.get('workers', 1))]
    print(json.dumps({'name': name, 'networkEndpoints': endpoints}))
elif verb == 'ssh' and worker != 'all':
    plan = answers.get('ssh', {}).get(worker, [{}])
    attempt = sum(1 for call in calls if 'libtpu_lockfile' in call[-1]) - 1  # a preflight each
    step = plan[min(attempt, len(plan) - 1)]
    while step.get('together'):  # until every worker of this attempt has started
        with open(record) as f:
            calls = [json.loads(line) for line in f]
        last = max(i for i, call in enumerate(calls) if 'libtpu_lockfile' in call[-1])
        if sum(call[3] == 'ssh' for call in calls[last + 1 :]) >= answers.get('workers', 1):
            break
        time.sleep(0.01)
    for line in step.get('lines', []):
        print(line, flush=True)
    time.sleep(step.get('sleep', 0))
    for line in step.get('after', []):
        print(line, flush=True)
    sys.exit(step.get('exit', 0))
"""

KEEPALIVE = ['--ssh-flag=-oServerAliveInterval=30', '--ssh-flag=-oServerAliveCountMax=6']
V5E = ['--name', 'tpu5', '--zone', 'us-west4-a', '--accelerator-type', 'v5litepod-8']
V5E_WHERE = ['--zone', 'us-west4-a']
V6E = ['--name', 'tpu6', '--zone', 'us-east5-b', '--accelerator-type', 'v6e-16']
V6E_WHERE = ['--zone', 'us-east5-b']
TRAIN = ['--config', 'configs/demo.py', '--workdir', 'gs://bucket/run']
TRAIN_SCRIPT = (
    'cd ~/semvlp_jax && exec ~/semvlp_venv/bin/python -m semvlp_jax.main --config configs/demo.py '
    '--workdir gs://bucket/run --multihost --config.total_steps=100'
)


def vm(*args):
    return ['compute', 'tpus', 'tpu-vm', *args]


def qr(*args):
    return ['compute', 'tpus', 'queued-resources', *args]


def setup_calls(name, where, tarball):
    return [
        vm('scp', str(tarball), f'{name}:semvlp_jax.tar.gz', *where, '--worker=all'),
        vm('ssh', name, *where, '--worker=all', '--command', gcloud.INSTALL_SCRIPT),
    ]


def preflight_call(name, where):
    return vm('ssh', name, *where, '--worker=all', '--command', gcloud.PREFLIGHT_SCRIPT)


def train_calls(name, where, workers, script=TRAIN_SCRIPT):
    return [
        vm('ssh', name, *where, f'--worker={i}', *KEEPALIVE, '--command', script)
        for i in range(workers)
    ]


class FakeClock:
    def __init__(self):
        self.now = 0.0
        self.sleeps = []

    def time(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


@dataclasses.dataclass
class Stub:
    dir: pathlib.Path

    @property
    def record(self):
        return self.dir / 'record.jsonl'

    def answer(self, **answers):
        (self.dir / 'answers.json').write_text(json.dumps(answers))

    def calls(self):
        if not self.record.exists():
            return []
        return _in_worker_order([json.loads(line) for line in self.record.read_text().splitlines()])

    def worker_pids(self):
        pids = self.dir / 'record.jsonl.pids'
        return [int(p) for p in pids.read_text().split()] if pids.exists() else []


def _is_worker_ssh(call):
    return call[3] == 'ssh' and '--worker=all' not in call


def _in_worker_order(calls):
    """The per-worker ssh commands start together, in any order: sort each such run by worker."""
    ordered, i = [], 0
    while i < len(calls):
        j = i
        while j < len(calls) and _is_worker_ssh(calls[j]):
            j += 1
        if j == i:
            ordered.append(calls[i])
            i += 1
        else:
            ordered.extend(sorted(calls[i:j], key=lambda c: next(a for a in c if 'worker=' in a)))
            i = j
    return ordered


@pytest.fixture
def stub(tmp_path, monkeypatch):
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    script = bin_dir / 'gcloud'
    script.write_text(f'#!{sys.executable} -S\n{STUB}')
    script.chmod(0o755)
    monkeypatch.setenv('PATH', f'{bin_dir}{os.pathsep}{os.environ["PATH"]}')
    monkeypatch.setenv('GCLOUD_STUB_RECORD', str(tmp_path / 'bin' / 'record.jsonl'))
    monkeypatch.setenv('GCLOUD_STUB_ANSWERS', str(tmp_path / 'bin' / 'answers.json'))
    stub = Stub(bin_dir)
    stub.answer()
    return stub


@pytest.fixture
def source(tmp_path):
    """A small git work tree standing in for the repository."""
    code = tmp_path / 'code'
    for name, text in {
        'setup.py': 'setup()\n',
        'semvlp_jax/main.py': 'print(1)\n',
        '.gitignore': 'secret.txt\n',
        'secret.txt': 'ignored\n',
        'configs/new.py': 'untracked, not ignored\n',
        'launch_logs/old/worker-0.log': 'an earlier run\n',
    }.items():
        (code / name).parent.mkdir(parents=True, exist_ok=True)
        (code / name).write_text(text)
    subprocess.run(['git', 'init', '-q'], cwd=code, check=True, capture_output=True)
    subprocess.run(['git', 'add', 'setup.py', 'semvlp_jax', '.gitignore'], cwd=code, check=True)
    return code


@pytest.fixture
def paths(tmp_path):
    logs = tmp_path / 'logs'
    return logs, ['--log-dir', str(logs)]


@pytest.fixture
def src(source):
    return ['--source', str(source)]


def launch(*argv, clock=None):
    return tpu.main([str(a) for a in argv], clock=clock or FakeClock())


def error_lines(err):
    return [line for line in err.splitlines() if line.startswith('launch: error:')]


# ---------------------------------------------------------------------- (1) a v5e TPU VM


def test_v5e_tpu_vm_run_creates_waits_copies_installs_preflights_runs_and_deletes(
    stub, paths, src, capsys
):
    logs, flags = paths
    stub.answer(
        states={'tpu-vm/tpu5': ['CREATING', 'READY']},
        workers=1,
        ssh={'0': [{'lines': ['step 100: loss 1.5']}]},
    )
    clock = FakeClock()
    status = launch(
        'run', *V5E, '--project', 'proj', *flags, *src, *TRAIN, '--create', '--delete',
        '--', '--config.total_steps=100', clock=clock,
    )  # fmt: skip
    assert status == 0
    where = [*V5E_WHERE, '--project', 'proj']
    assert stub.calls() == [
        vm('create', 'tpu5', *where, '--accelerator-type', 'v5litepod-8',
           '--version', 'v2-alpha-tpuv5-lite'),
        vm('describe', 'tpu5', *where, '--format=value(state)'),
        vm('describe', 'tpu5', *where, '--format=value(state)'),
        vm('describe', 'tpu5', *where, '--format=json'),
        *setup_calls('tpu5', where, logs / 'code.tar.gz'),
        preflight_call('tpu5', where),
        *train_calls('tpu5', where, 1),
        vm('delete', 'tpu5', *where, '--quiet'),
    ]  # fmt: skip
    assert clock.sleeps == [30.0]
    with tarfile.open(logs / 'code.tar.gz') as tar:
        assert sorted(tar.getnames()) == [
            '.gitignore', 'configs/new.py', 'semvlp_jax/main.py', 'setup.py'
        ]  # fmt: skip
    out, err = capsys.readouterr()
    assert '[worker 0] step 100: loss 1.5' in out.splitlines()
    assert (logs / 'worker-0.log').read_text() == 'step 100: loss 1.5\n'
    assert 'warning' not in err and not error_lines(err)


def test_worker_scripts_install_the_tpu_extra_and_free_the_tpu():
    install, preflight = gcloud.INSTALL_SCRIPT, gcloud.PREFLIGHT_SCRIPT
    assert 'tar -xzf ~/semvlp_jax.tar.gz -C ~/semvlp_jax' in install
    assert 'uv venv -q --seed --python 3.11 ~/semvlp_venv' in install
    assert install.endswith('~/semvlp_venv/bin/pip install -q -e ".[tpu]"')
    assert 'sudo lsof -t /dev/accel* /dev/vfio/* 2>/dev/null' in preflight
    assert '| xargs -r sudo kill -9' in preflight
    assert 'sudo rm -f /tmp/libtpu_lockfile' in preflight
    for script in (install, preflight, TRAIN_SCRIPT):
        subprocess.run(['bash', '-n', '-c', script], check=True)  # valid shell


# ---------------------------------------------------------------------- (2) a v6e spot request


def test_v6e_spot_queued_resource_is_requested_and_polled_until_active(stub, paths, capsys):
    _, flags = paths
    stub.answer(
        states={
            'queued-resources/tpu6': [
                'WAITING_FOR_RESOURCES', 'WAITING_FOR_RESOURCES', 'PROVISIONING', 'ACTIVE'
            ]
        },
        workers=4,
    )  # fmt: skip
    clock = FakeClock()
    assert launch('create', *V6E, '--spot', *flags, clock=clock) == 0
    assert launch('wait', *V6E, '--spot', *flags, '--poll-interval', 10, clock=clock) == 0
    state = qr('describe', 'tpu6', *V6E_WHERE, '--format=value(state.state)')
    assert stub.calls() == [
        qr('create', 'tpu6', *V6E_WHERE, '--runtime-version', 'v2-alpha-tpuv6e',
           '--accelerator-type', 'v6e-16', '--node-id', 'tpu6', '--spot'),
        state, state, state, state,
        vm('describe', 'tpu6', *V6E_WHERE, '--format=json'),
    ]  # fmt: skip
    assert clock.sleeps == [10.0, 10.0, 10.0]
    err = capsys.readouterr().err
    for line in (
        'queued resource tpu6: WAITING_FOR_RESOURCES (0 s)',
        'queued resource tpu6: PROVISIONING (20 s)',
        'queued resource tpu6: ACTIVE (30 s)',
        'the queued resource tpu6 is ACTIVE with 4 worker(s)',
    ):
        assert f'launch: {line}' in err.splitlines()


@pytest.mark.parametrize(
    ('flags', 'tier'),
    [(['--queued'], []), (['--spot'], ['--spot']), (['--reserved'], ['--reserved'])],
)
def test_queued_resource_tiers(flags, tier):
    args = tpu.build_parser().parse_args(['create', *V6E, '--project', 'p', *flags])
    assert gcloud.create(tpu.capacity_from(args)) == ['gcloud', *qr(
        'create', 'tpu6', *V6E_WHERE, '--project', 'p', '--runtime-version', 'v2-alpha-tpuv6e',
        '--accelerator-type', 'v6e-16', '--node-id', 'tpu6', *tier,
    )]  # fmt: skip
    assert gcloud.delete(tpu.capacity_from(args)) == ['gcloud', *qr(
        'delete', 'tpu6', *V6E_WHERE, '--project', 'p', '--force', '--quiet'
    )]  # fmt: skip


def test_spot_and_reserved_exclude_each_other(stub, capsys):
    with pytest.raises(SystemExit):
        launch('create', *V6E, '--spot', '--reserved')
    assert '--spot and --reserved are two kinds of capacity' in capsys.readouterr().err
    assert stub.calls() == []


# ---------------------------------------------------------------------- (3) many hosts


def test_multi_host_run_logs_each_worker_to_its_file_and_follows_worker_0(stub, paths, src, capsys):
    logs, flags = paths
    lines = {i: [f'hello from worker {i}', f'step 1 on worker {i}'] for i in range(4)}
    stub.answer(
        states={'tpu-vm/pod': ['READY']},
        workers=4,
        ssh={str(i): [{'lines': lines[i]}] for i in range(4)},
    )
    where = ['--zone', 'us-central2-b']
    status = launch(
        'run', '--name', 'pod', *where, *flags, *src, '--config', 'configs/demo.py',
        '--workdir', '/tmp/local_run',
    )  # fmt: skip
    assert status == 0
    script = (
        'cd ~/semvlp_jax && exec ~/semvlp_venv/bin/python -m semvlp_jax.main '
        '--config configs/demo.py --workdir /tmp/local_run --multihost'
    )
    assert stub.calls() == [
        vm('describe', 'pod', *where, '--format=value(state)'),
        vm('describe', 'pod', *where, '--format=json'),
        preflight_call('pod', where),
        *train_calls('pod', where, 4, script),
    ]
    for i in range(4):
        assert (logs / f'worker-{i}.log').read_text().splitlines() == lines[i]
    out, err = capsys.readouterr()
    assert out.splitlines() == [f'[worker 0] {line}' for line in lines[0]]
    warnings = [line for line in err.splitlines() if 'warning' in line]
    assert warnings == [
        'launch: warning: --workdir /tmp/local_run is not a gs:// path, but the 4 workers must '
        'share it (each writes its part of every checkpoint there)'
    ]


# ---------------------------------------------------------------------- (4) a failed worker


def test_failed_worker_stops_the_run_terminates_the_others_and_names_its_log(
    stub, paths, src, capsys
):
    logs, flags = paths
    slow = [{'lines': ['started'], 'sleep': 30, 'after': ['finished']}]
    stub.answer(
        states={'tpu-vm/tpu5': ['READY']},
        workers=4,
        ssh={
            '0': slow,
            '1': slow,
            '2': [
                {
                    'lines': ['Traceback (most recent call last):', 'ValueError: bad'],
                    'exit': 3,
                    'together': True,
                }
            ],
            '3': slow,
        },
    )
    start = time.monotonic()
    status = launch('run', *V5E, *flags, *src, *TRAIN)
    assert time.monotonic() - start < 15, 'the other workers were not terminated'
    assert status == 3
    err = capsys.readouterr().err
    assert error_lines(err) == [
        f'launch: error: worker 2 exited with status 3; log: {logs / "worker-2.log"}'
    ]
    assert 'ValueError: bad' in (logs / 'worker-2.log').read_text()
    for i in (0, 1, 3):
        assert 'finished' not in (logs / f'worker-{i}.log').read_text()
    assert len(stub.worker_pids()) == 4
    for pid in stub.worker_pids():
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert [c for c in stub.calls() if c[3] == 'delete'] == []


def test_a_preempted_worker_without_until_done_exits_143_and_says_so(stub, paths, src, capsys):
    logs, flags = paths
    stub.answer(states={'tpu-vm/tpu5': ['READY']}, ssh={'0': [{'exit': 143}]})
    assert launch('run', *V5E, *flags, *src, *TRAIN) == 143
    assert error_lines(capsys.readouterr().err) == [
        'launch: error: worker 0 exited with status 143 (SIGTERM or preemption: the trainer '
        f'saved a checkpoint first); log: {logs / "worker-0.log"}'
    ]


# ---------------------------------------------------------------------- (5) --until-done


def test_until_done_recreates_a_suspended_spot_slice_and_reruns_the_same_command(
    stub, paths, src, capsys
):
    logs, flags = paths
    stub.answer(
        states={
            'queued-resources/tpu6': ['ACTIVE', 'SUSPENDED', 'WAITING_FOR_RESOURCES', 'ACTIVE']
        },
        workers=2,
        ssh={
            '0': [{'lines': ['step 40: checkpoint saved'], 'exit': 143, 'together': True},
                  {'lines': ['resumed from step 40', 'step 100: done']}],
            '1': [{'sleep': 30}, {}],
        },
    )  # fmt: skip
    clock = FakeClock()
    status = launch(
        'run', *V6E, '--spot', *flags, *src, *TRAIN, '--create', '--until-done',
        '--', '--config.total_steps=100', clock=clock,
    )  # fmt: skip
    assert status == 0
    state = qr('describe', 'tpu6', *V6E_WHERE, '--format=value(state.state)')
    create = qr(
        'create', 'tpu6', *V6E_WHERE, '--runtime-version', 'v2-alpha-tpuv6e',
        '--accelerator-type', 'v6e-16', '--node-id', 'tpu6', '--spot',
    )  # fmt: skip
    node = vm('describe', 'tpu6', *V6E_WHERE, '--format=json')
    attempt = [
        *setup_calls('tpu6', V6E_WHERE, logs / 'code.tar.gz'),
        preflight_call('tpu6', V6E_WHERE),
        *train_calls('tpu6', V6E_WHERE, 2),
    ]
    assert stub.calls() == [
        create, state, node, *attempt,
        state,  # SUSPENDED: preempted
        qr('delete', 'tpu6', *V6E_WHERE, '--force', '--quiet'),
        create, state, state, node, *attempt,
    ]  # fmt: skip
    assert clock.sleeps == [30.0]
    assert (logs / 'worker-0.log').read_text().splitlines() == [
        'step 40: checkpoint saved',
        '--- restart 1: the queued resource tpu6 is SUSPENDED ---',
        'resumed from step 40',
        'step 100: done',
    ]
    err = capsys.readouterr().err
    assert (
        'launch: the queued resource tpu6 is SUSPENDED: recreating the queued resource tpu6 to '
        'resume from the last checkpoint in gs://bucket/run (restart 1 of at most 5)'
    ) in err.splitlines()
    assert not error_lines(err)


def test_until_done_treats_a_dropped_ssh_as_a_preemption_of_a_tpu_vm(stub, paths, src):
    logs, flags = paths
    stub.answer(states={'tpu-vm/tpu5': ['READY']}, ssh={'0': [{'exit': 255}, {}]})
    assert (
        launch('run', *V5E, *flags, *src, *TRAIN, '--until-done', '--', '--config.total_steps=100')
        == 0
    )
    state = vm('describe', 'tpu5', *V5E_WHERE, '--format=value(state)')
    node = vm('describe', 'tpu5', *V5E_WHERE, '--format=json')
    run = [preflight_call('tpu5', V5E_WHERE), *train_calls('tpu5', V5E_WHERE, 1)]
    assert stub.calls() == [
        state, node, *run,
        state,  # READY, but the ssh dropped
        vm('delete', 'tpu5', *V5E_WHERE, '--quiet'),
        vm('create', 'tpu5', *V5E_WHERE, '--accelerator-type', 'v5litepod-8',
           '--version', 'v2-alpha-tpuv5-lite'),
        state, node, *setup_calls('tpu5', V5E_WHERE, logs / 'code.tar.gz'), *run,
    ]  # fmt: skip


def test_until_done_recreates_a_tpu_vm_that_is_gone_without_deleting_it(stub, paths, src):
    _, flags = paths
    stub.answer(states={'tpu-vm/tpu5': ['READY', None, 'READY']}, ssh={'0': [{'exit': 1}, {}]})
    assert launch('run', *V5E, *flags, *src, *TRAIN, '--until-done') == 0
    verbs = [c[3] for c in stub.calls()]
    assert verbs == [
        'describe', 'describe', 'ssh', 'ssh',
        'describe',  # NOT_FOUND
        'create', 'describe', 'describe', 'scp', 'ssh', 'ssh', 'ssh',
    ]  # fmt: skip


def test_until_done_stops_at_a_real_failure_naming_the_worker(stub, paths, src, capsys):
    logs, flags = paths
    stub.answer(
        states={'queued-resources/tpu6': ['ACTIVE']},
        workers=2,
        ssh={
            '0': [{'sleep': 30}],
            '1': [{'lines': ['ValueError: bad'], 'exit': 1, 'together': True}],
        },
    )
    assert launch('run', *V6E, '--spot', *flags, *src, *TRAIN, '--until-done') == 1
    calls = stub.calls()
    assert calls[-1] == qr('describe', 'tpu6', *V6E_WHERE, '--format=value(state.state)')
    assert not [c for c in calls if c[3] in ('delete', 'create')]
    assert error_lines(capsys.readouterr().err) == [
        'launch: error: worker 1 exited with status 1 while the queued resource tpu6 is ACTIVE: '
        f'a failure, not a preemption; log: {logs / "worker-1.log"}'
    ]


def test_until_done_gives_up_after_max_restarts(stub, paths, src, capsys):
    logs, flags = paths
    stub.answer(states={'tpu-vm/tpu5': ['READY']}, ssh={'0': [{'exit': 143}]})
    status = launch('run', *V5E, *flags, *src, *TRAIN, '--until-done', '--max-restarts', 1)
    assert status == 143
    assert sum(c[3] == 'create' for c in stub.calls()) == 1
    assert sum(_is_worker_ssh(c) for c in stub.calls()) == 2
    assert error_lines(capsys.readouterr().err) == [
        'launch: error: worker 0 was stopped by SIGTERM (exit 143), and the 1 restart(s) allowed '
        f'(--max-restarts) are used up; log: {logs / "worker-0.log"}'
    ]


# ---------------------------------------------------------------------- (6) --dry-run


def test_dry_run_prints_every_command_and_calls_nothing(stub, paths, src, source, capsys):
    logs, flags = paths
    status = launch(
        'run', *V6E, '--spot', *flags, *src, *TRAIN, '--create', '--until-done', '--delete',
        '--dry-run', '--num-workers', 2, '--', '--config.total_steps=100',
    )  # fmt: skip
    assert status == 0
    assert not stub.record.exists()
    assert not logs.exists()
    commands = [
        qr('create', 'tpu6', *V6E_WHERE, '--runtime-version', 'v2-alpha-tpuv6e',
           '--accelerator-type', 'v6e-16', '--node-id', 'tpu6', '--spot'),
        qr('describe', 'tpu6', *V6E_WHERE, '--format=value(state.state)'),
        vm('describe', 'tpu6', *V6E_WHERE, '--format=json'),
        None,
        *setup_calls('tpu6', V6E_WHERE, logs / 'code.tar.gz'),
        preflight_call('tpu6', V6E_WHERE),
        *train_calls('tpu6', V6E_WHERE, 2),
        qr('delete', 'tpu6', *V6E_WHERE, '--force', '--quiet'),
    ]  # fmt: skip
    pack = f'# pack the files `git ls-files` lists in {source} into {logs / "code.tar.gz"}'
    expected = [pack if c is None else shlex.join(['gcloud', *c]) for c in commands]
    assert capsys.readouterr().out.splitlines() == expected


# ---------------------------------------------------------------------- (7) waiting that fails


def test_wait_times_out_with_the_last_state(stub, paths, capsys):
    _, flags = paths
    stub.answer(states={'queued-resources/tpu6': ['WAITING_FOR_RESOURCES']})
    clock = FakeClock()
    status = launch(
        'wait', *V6E, '--spot', *flags, '--wait-timeout', 90, '--poll-interval', 30, clock=clock
    )
    assert status == 1
    assert clock.sleeps == [30.0, 30.0, 30.0]
    assert len(stub.calls()) == 4
    assert error_lines(capsys.readouterr().err) == [
        'launch: error: timed out after 90 s waiting for the queued resource tpu6 to become '
        'ACTIVE (last state: WAITING_FOR_RESOURCES); raise --wait-timeout, or delete it'
    ]


@pytest.mark.parametrize('lost', ['FAILED', 'SUSPENDED'])
def test_a_failed_or_suspended_queued_resource_ends_the_wait(stub, paths, src, capsys, lost):
    _, flags = paths
    stub.answer(states={'queued-resources/tpu6': ['PROVISIONING', lost]})
    clock = FakeClock()
    assert launch('run', *V6E, '--spot', *flags, *src, *TRAIN, clock=clock) == 1
    assert clock.sleeps == [30.0]
    assert [c[3] for c in stub.calls()] == ['describe', 'describe']  # no ssh
    assert error_lines(capsys.readouterr().err) == [
        f'launch: error: the queued resource tpu6 is {lost} and will not become ACTIVE: delete '
        'it (`python -m launch.tpu delete` with the same flags) and create it again'
    ]


def test_a_preempted_tpu_vm_ends_the_wait(stub, paths, capsys):
    _, flags = paths
    stub.answer(states={'tpu-vm/tpu5': ['PREEMPTED']})
    assert launch('wait', *V5E, *flags) == 1
    assert 'the TPU VM tpu5 is PREEMPTED and will not become READY' in capsys.readouterr().err


# ---------------------------------------------------------------------- (8) runtime versions


@pytest.mark.parametrize(
    ('accelerator_type', 'runtime'),
    [
        ('v6e-8', 'v2-alpha-tpuv6e'),
        ('v6e-256', 'v2-alpha-tpuv6e'),
        ('v5p-128', 'v2-alpha-tpuv5'),
        ('v5litepod-16', 'v2-alpha-tpuv5-lite'),
        ('v5e-4', 'v2-alpha-tpuv5-lite'),
        ('v4-32', 'tpu-ubuntu2204-base'),
        ('v3-8', 'tpu-ubuntu2204-base'),
        ('v2-8', 'tpu-ubuntu2204-base'),
    ],
)
def test_runtime_version_per_accelerator_type(accelerator_type, runtime):
    assert gcloud.runtime_version(accelerator_type) == runtime


@pytest.mark.parametrize('accelerator_type', ['v7x-8', 'tpu7x-8', 'v6e', 'v5litepod-x', 'gpu'])
def test_an_unknown_accelerator_type_is_an_error(accelerator_type):
    with pytest.raises(LaunchError, match='unknown accelerator type.*--runtime-version'):
        gcloud.runtime_version(accelerator_type)


def test_an_unknown_type_stops_before_gcloud_unless_the_runtime_is_given(stub, paths, capsys):
    _, flags = paths
    where = ['--name', 'x', '--zone', 'z']
    assert launch('create', *where, '--accelerator-type', 'v7x-8', *flags) == 1
    assert "unknown accelerator type 'v7x-8'" in capsys.readouterr().err
    assert stub.calls() == []
    argv = ['create', *where, '--accelerator-type', 'v7x-8', '--runtime-version', 'v2-new']
    assert launch(*argv, *flags) == 0
    assert stub.calls() == [
        vm('create', 'x', '--zone', 'z', '--accelerator-type', 'v7x-8', '--version', 'v2-new')
    ]


# ---------------------------------------------------------------------- the rest of the CLI


def test_delete_and_logs(stub, paths, capsys):
    logs, flags = paths
    assert launch('delete', *V5E, *flags) == 0
    assert launch('delete', *V6E, '--reserved', *flags) == 0
    assert stub.calls() == [
        vm('delete', 'tpu5', *V5E_WHERE, '--quiet'),
        qr('delete', 'tpu6', *V6E_WHERE, '--force', '--quiet'),
    ]
    assert launch('logs', *V5E, *flags) == 1
    assert 'no worker logs' in capsys.readouterr().err
    logs.mkdir()
    for i in (0, 1, 10):
        (logs / f'worker-{i}.log').write_text(''.join(f'line {n} of {i}\n' for n in range(30)))
    assert launch('logs', *V5E, *flags, '--lines', 2) == 0
    assert capsys.readouterr().out.splitlines() == [
        f'==> {logs / "worker-0.log"} <==', 'line 28 of 0', 'line 29 of 0',
        f'==> {logs / "worker-1.log"} <==', 'line 28 of 1', 'line 29 of 1',
        f'==> {logs / "worker-10.log"} <==', 'line 28 of 10', 'line 29 of 10',
    ]  # fmt: skip


def test_trainer_arguments_after_double_dash_only_go_to_run(stub, paths, capsys):
    _, flags = paths
    with pytest.raises(SystemExit):
        launch('delete', *V5E, *flags, '--', '--config.total_steps=1')
    assert 'only `run` takes them' in capsys.readouterr().err
    assert stub.calls() == []


def test_missing_gcloud_is_a_clear_error(paths, monkeypatch, capsys):
    _, flags = paths
    monkeypatch.setenv('PATH', '/nonexistent')
    assert launch('delete', *V5E, *flags) == 1
    assert 'gcloud is not on PATH' in capsys.readouterr().err


def test_help_has_examples_and_importing_the_launcher_imports_no_jax():
    result = subprocess.run(
        [sys.executable, '-m', 'launch.tpu', '--help'],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    for word in ('create', 'wait', 'setup', 'preflight', 'run', 'logs', 'delete', 'examples:'):
        assert word in result.stdout
    result = subprocess.run(
        [sys.executable, '-m', 'launch.tpu', 'run', '--help'],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert '--until-done' in result.stdout and '--max-restarts' in result.stdout
    check = 'import sys, launch.tpu; print([m for m in sys.modules if m.split(".")[0] in ("jax", "semvlp_jax")])'
    result = subprocess.run(
        [sys.executable, '-c', check], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == '[]'


def test_capacity_rejects_spot_outside_a_queued_resource():
    with pytest.raises(ValueError, match='queued resource'):
        Capacity('n', 'z', provisioning='spot')
