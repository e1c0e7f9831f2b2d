"""Run semvlp_jax on a Cloud TPU slice with the gcloud CLI: `python -m launch.tpu SUBCOMMAND`.

create → wait → setup (copy the code, install) → run (preflight, then the trainer on every
worker) → delete; `run --create --delete` does all of it, `run --until-done` recreates the slice
after a preemption and resumes. Every subcommand takes the same capacity flags. `--help` of each
subcommand gives examples; README "Running on Cloud TPU" the whole path.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shlex
import subprocess
import sys
import tarfile
import time
from collections.abc import Sequence
from typing import TextIO

from launch import gcloud
from launch.gcloud import Capacity, LaunchError
from launch.workers import WorkerFailure, log_path, run_workers

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
# Default parent of the log directories (LOG_ROOT/NAME); never copied to the workers.
LOG_ROOT = 'launch_logs'
TARBALL = 'code.tar.gz'
# semvlp_jax.main exits with this after SIGTERM or a preemption notice, once a checkpoint is saved.
PREEMPTED_EXIT_CODE = 143
# ssh's status when the connection failed or dropped.
SSH_DROPPED_EXIT_CODE = 255

EXAMPLES = """\
examples:
  # v5e, one host, on demand: create, wait, copy + install, train, delete, in one command
  python -m launch.tpu run --name semvlp-v5e --zone us-west4-a --accelerator-type v5litepod-8 \\
      --create --delete --config configs/demo.py --workdir gs://BUCKET/demo

  # v6e spot, several hosts: recreated and resumed after every preemption; trainer flags after --
  python -m launch.tpu run --name semvlp-v6e --zone us-east5-b --accelerator-type v6e-16 \\
      --spot --create --until-done --config configs/pretrain_real.py:data_dir=gs://BUCKET/data \\
      --workdir gs://BUCKET/pretrain -- --config.total_steps=200000

  # step by step, the same capacity flags each time
  TPU=(--name semvlp --zone us-west4-a --accelerator-type v5litepod-16)
  python -m launch.tpu create "${TPU[@]}"
  python -m launch.tpu wait "${TPU[@]}"
  python -m launch.tpu setup "${TPU[@]}"
  python -m launch.tpu run "${TPU[@]}" --config configs/demo.py --workdir gs://BUCKET/demo
  python -m launch.tpu logs "${TPU[@]}"
  python -m launch.tpu delete "${TPU[@]}"

  # print every gcloud command instead of running it
  python -m launch.tpu run "${TPU[@]}" --create --config configs/demo.py \\
      --workdir gs://BUCKET/demo --dry-run --num-workers 4
"""


class Clock:
    """Real time; tests pass one whose `sleep` only advances `time`."""

    def time(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class Launcher:
    """Runs, or with `dry_run` prints, the gcloud commands for one capacity."""

    def __init__(
        self,
        capacity: Capacity,
        *,
        log_dir: pathlib.Path,
        dry_run: bool = False,
        num_workers: int = 1,
        wait_timeout: float = 0.0,
        poll_interval: float = 30.0,
        clock: Clock | None = None,
        out: TextIO | None = None,
        err: TextIO | None = None,
    ):
        self.capacity = capacity
        self.log_dir = log_dir
        self.dry_run = dry_run
        self.num_workers = num_workers
        self.wait_timeout = wait_timeout
        self.poll_interval = poll_interval
        self.clock = clock or Clock()
        self.out = out or sys.stdout
        self.err = err or sys.stderr

    # ------------------------------------------------------------------ running gcloud

    def say(self, message: str) -> None:
        print(f'launch: {message}', file=self.err, flush=True)

    def call(self, command: Sequence[str]) -> None:
        """Runs a command (its output to the console); a failure ends the launch."""
        if self.dry_run:
            print(shlex.join(command), file=self.out, flush=True)
            return
        status = _gcloud(subprocess.run, command, stdin=subprocess.DEVNULL).returncode
        if status != 0:
            raise LaunchError(f'`{_short(command)}` failed with status {status} (see above)')

    def query(self, command: Sequence[str]) -> subprocess.CompletedProcess:
        return _gcloud(
            subprocess.run, command, stdin=subprocess.DEVNULL, capture_output=True, text=True
        )

    # ------------------------------------------------------------------ the capacity

    def create(self) -> None:
        c = self.capacity
        self.say(
            f'creating the {c} ({c.accelerator_type}, runtime {c.runtime_version}, '
            f'{c.provisioning})'
        )
        self.call(gcloud.create(c))

    def delete(self) -> None:
        self.say(f'deleting the {self.capacity}')
        self.call(gcloud.delete(self.capacity))

    def state(self) -> str | None:
        """The capacity's state now; None when it cannot be described (e.g. it is gone)."""
        result = self.query(gcloud.describe_state(self.capacity))
        return result.stdout.strip() if result.returncode == 0 else None

    def wait(self) -> int:
        """Polls until the capacity can run; returns its number of workers."""
        c = self.capacity
        if self.dry_run:  # assume it is ready, with --num-workers workers
            self.call(gcloud.describe_state(c))
            self.call(gcloud.describe_node(c))
            return self.num_workers
        start = self.clock.time()
        last = None
        while True:
            result = self.query(gcloud.describe_state(c))
            if result.returncode != 0:
                raise LaunchError(f'cannot describe the {c}: {_last_line(result.stderr)}')
            state = result.stdout.strip()
            waited = self.clock.time() - start
            if state != last:
                self.say(f'{c}: {state or "no state yet"} ({waited:.0f} s)')
                last = state
            if state == c.ready_state:
                return self._count_workers()
            if state in c.lost_states:
                raise LaunchError(
                    f'the {c} is {state} and will not become {c.ready_state}: delete it '
                    f'(`python -m launch.tpu delete` with the same flags) and create it again'
                )
            if self.wait_timeout and waited >= self.wait_timeout:
                raise LaunchError(
                    f'timed out after {self.wait_timeout:g} s waiting for the {c} to become '
                    f'{c.ready_state} (last state: {state or "none"}); raise --wait-timeout, '
                    f'or delete it'
                )
            pause = self.poll_interval
            if self.wait_timeout:
                pause = min(pause, self.wait_timeout - waited)
            self.clock.sleep(pause)

    def _count_workers(self) -> int:
        result = self.query(gcloud.describe_node(self.capacity))
        if result.returncode != 0:
            raise LaunchError(f'cannot describe the TPU VM: {_last_line(result.stderr)}')
        try:
            endpoints = json.loads(result.stdout).get('networkEndpoints') or []
        except (json.JSONDecodeError, AttributeError):
            endpoints = []
        if not endpoints:
            raise LaunchError(
                f'the TPU VM {self.capacity.name} lists no workers (networkEndpoints)'
            )
        return len(endpoints)

    # ------------------------------------------------------------------ the workers

    def setup(self, source: pathlib.Path) -> None:
        """Copies the code to every worker and installs it there with its TPU extra."""
        tarball = self.log_dir / TARBALL
        if self.dry_run:
            print(
                f'# pack the files `git ls-files` lists in {source} into {tarball}', file=self.out
            )
        else:
            count = pack_code(source, tarball, skip=[source / LOG_ROOT, self.log_dir])
            self.say(f'packed {count} files of {source} into {tarball}')
        self.call(gcloud.copy_code(self.capacity, str(tarball)))
        self.say('installing on every worker (a virtual environment, pip install -e ".[tpu]")')
        self.call(gcloud.ssh_all(self.capacity, gcloud.INSTALL_SCRIPT))

    def preflight(self) -> None:
        """Frees the TPU on every worker: kills what holds it, removes libtpu's lock file."""
        self.call(gcloud.ssh_all(self.capacity, gcloud.PREFLIGHT_SCRIPT))

    def run_workers(self, script: str, workers: int, header: str | None) -> WorkerFailure | None:
        commands = [gcloud.ssh_worker(self.capacity, i, script) for i in range(workers)]
        if self.dry_run:
            for command in commands:
                print(shlex.join(command), file=self.out)
            return None
        self.say(f'running on {workers} worker(s); logs in {self.log_dir}')
        return _gcloud(run_workers, commands, self.log_dir, console=self.out, header=header)


def _gcloud(function, command, *args, **kwargs):
    try:
        return function(command, *args, **kwargs)
    except FileNotFoundError:
        raise LaunchError(
            'gcloud is not on PATH: install the Google Cloud CLI '
            '(https://cloud.google.com/sdk/docs/install) and run `gcloud auth login`'
        ) from None


def _short(command: Sequence[str]) -> str:
    return shlex.join(command[:6]) + (' ...' if len(command) > 6 else '')


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else 'no message'


def pack_code(
    source: pathlib.Path, tarball: pathlib.Path, skip: Sequence[pathlib.Path] = ()
) -> int:
    """Tars what `git ls-files` lists in `source`: tracked files and untracked ones git does not
    ignore (so uncommitted edits go along; .git, virtual environments and build outputs do not),
    minus the directories in `skip`. Returns the number of files."""
    try:
        listing = subprocess.run(
            ['git', 'ls-files', '-z', '--cached', '--others', '--exclude-standard'],
            cwd=source,
            capture_output=True,
            check=True,
        ).stdout.decode()
    except (subprocess.CalledProcessError, FileNotFoundError, NotADirectoryError):
        raise LaunchError(
            f'{source} is not a git work tree: the code copied to the workers is what '
            f'`git ls-files` lists there (pass --source)'
        ) from None
    root = source.resolve()
    skipped = [path.resolve() for path in skip]
    names = sorted({name for name in listing.split('\0') if name})
    tarball.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with tarfile.open(tarball, 'w:gz') as tar:
        for name in names:
            path = root / name
            if not path.exists() or any(path.is_relative_to(s) for s in skipped):
                continue  # deleted but still in the index, or a log
            tar.add(path, arcname=name, recursive=False)
            count += 1
    return count


# ---------------------------------------------------------------------- subcommands


def _create(launcher: Launcher, args, extra) -> int:
    launcher.create()
    return 0


def _wait(launcher: Launcher, args, extra) -> int:
    workers = launcher.wait()
    c = launcher.capacity
    launcher.say(f'the {c} is {c.ready_state} with {workers} worker(s)')
    return 0


def _setup(launcher: Launcher, args, extra) -> int:
    launcher.setup(args.source)
    return 0


def _preflight(launcher: Launcher, args, extra) -> int:
    launcher.preflight()
    return 0


def _delete(launcher: Launcher, args, extra) -> int:
    launcher.delete()
    return 0


def _logs(launcher: Launcher, args, extra) -> int:
    log_dir = launcher.log_dir
    if args.worker is not None:
        logs = [log_path(log_dir, args.worker)]
    else:
        logs = sorted(log_dir.glob('worker-*.log'), key=lambda p: int(p.stem.split('-')[1]))
    logs = [log for log in logs if log.exists()]
    if not logs:
        raise LaunchError(f'no worker logs in {log_dir} (`run` writes them)')
    for log in logs:
        lines = log.read_text(errors='replace').splitlines()
        print(f'==> {log} <==', file=launcher.out)
        for line in lines[-args.lines :]:
            print(line, file=launcher.out)
    return 0


def _run(launcher: Launcher, args, extra) -> int:
    if (args.create or args.until_done) and not launcher.capacity.runtime_version:
        raise LaunchError('--create and --until-done create the capacity: pass --accelerator-type')
    try:
        if args.create:
            launcher.create()
        workers = launcher.wait()
        if args.create or args.setup:
            launcher.setup(args.source)
        status = _train(launcher, args, extra, workers)
    except BaseException:
        if args.delete:
            try:
                launcher.delete()
            except LaunchError as e:
                launcher.say(f'warning: {e}')
        raise
    if args.delete:
        launcher.delete()
    return status


def _train(launcher: Launcher, args, extra: list[str], workers: int) -> int:
    """Runs the trainer on every worker; under --until-done, again after each preemption."""
    c = launcher.capacity
    script = gcloud.trainer_script(args.config, args.workdir, extra)
    if workers > 1 and not args.workdir.startswith('gs://'):
        launcher.say(
            f'warning: --workdir {args.workdir} is not a gs:// path, but the {workers} workers '
            f'must share it (each writes its part of every checkpoint there)'
        )
    restarts, header = 0, None
    while True:
        launcher.preflight()
        failure = launcher.run_workers(script, workers, header)
        if failure is None and launcher.dry_run:
            return 0
        if failure is None:
            launcher.say(f'done: all {workers} worker(s) exited 0; logs in {launcher.log_dir}')
            return 0
        status = failure.status if 0 < failure.status < 256 else 1
        what = f'worker {failure.worker} exited with status {failure.status}'
        if failure.status in _MEANINGS:
            what += f' ({_MEANINGS[failure.status]})'
        where = f'log: {failure.log}'
        if not args.until_done:
            launcher.say(f'error: {what}; {where}')
            return status
        state = launcher.state()
        reason = preemption(failure, state, c)
        if reason is None:
            launcher.say(
                f'error: {what} while the {c} is {state}: a failure, not a preemption; {where}'
            )
            return status
        if restarts >= args.max_restarts:
            launcher.say(
                f'error: {reason}, and the {args.max_restarts} restart(s) allowed '
                f'(--max-restarts) are used up; {where}'
            )
            return status
        restarts += 1
        launcher.say(
            f'{reason}: recreating the {c} to resume from the last checkpoint in {args.workdir} '
            f'(restart {restarts} of at most {args.max_restarts})'
        )
        if state is not None:  # a preempted queued resource or TPU VM still has to go
            launcher.delete()
        launcher.create()
        workers = launcher.wait()
        launcher.setup(args.source)
        header = f'restart {restarts}: {reason}'


_MEANINGS = {
    PREEMPTED_EXIT_CODE: 'SIGTERM or preemption: the trainer saved a checkpoint first',
    SSH_DROPPED_EXIT_CODE: 'the ssh connection dropped',
}


def preemption(failure: WorkerFailure, state: str | None, capacity: Capacity) -> str | None:
    """Why a failed attempt counts as a preemption (restart it), or None: a real failure."""
    if state != capacity.ready_state:
        return f'the {capacity} is {state or "gone"}'
    if failure.status == PREEMPTED_EXIT_CODE:
        return f'worker {failure.worker} was stopped by SIGTERM (exit {PREEMPTED_EXIT_CODE})'
    if failure.status == SSH_DROPPED_EXIT_CODE:
        return (
            f'the ssh connection to worker {failure.worker} dropped (exit {SSH_DROPPED_EXIT_CODE})'
        )
    return None


# ---------------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    capacity = argparse.ArgumentParser(add_help=False)
    group = capacity.add_argument_group('capacity (the same flags for every subcommand)')
    group.add_argument(
        '--name', required=True, help='TPU VM name; also the queued resource and its node id'
    )
    group.add_argument('--zone', required=True, help='e.g. us-west4-a')
    group.add_argument('--project', help='GCP project (default: the gcloud configuration)')
    group.add_argument(
        '--accelerator-type',
        help='e.g. v5litepod-8, v5litepod-16, v6e-16, v5p-8, v4-32 (needed to create)',
    )
    group.add_argument(
        '--runtime-version',
        help='TPU VM image; default from the accelerator type: v6e v2-alpha-tpuv6e, v5p '
        'v2-alpha-tpuv5, v5e (v5litepod) v2-alpha-tpuv5-lite, v4 and older tpu-ubuntu2204-base',
    )
    group.add_argument(
        '--queued',
        action='store_true',
        help='an on-demand queued resource instead of a plain TPU VM (waits for capacity)',
    )
    group.add_argument('--spot', action='store_true', help='spot capacity (a queued resource)')
    group.add_argument(
        '--reserved', action='store_true', help="the project's reservation (a queued resource)"
    )
    options = capacity.add_argument_group('launcher')
    options.add_argument(
        '--dry-run',
        action='store_true',
        help='print every gcloud command, one per line, instead of running any',
    )
    options.add_argument(
        '--num-workers',
        type=int,
        default=1,
        help='--dry-run only: the workers to assume (a real run asks the TPU VM; default 1)',
    )
    options.add_argument(
        '--log-dir',
        type=pathlib.Path,
        help='per-worker logs worker-I.log and the code tarball (default ./launch_logs/NAME)',
    )

    waiting = argparse.ArgumentParser(add_help=False)
    group = waiting.add_argument_group('waiting')
    group.add_argument(
        '--wait-timeout',
        type=float,
        default=7200.0,
        help='seconds to wait for ACTIVE / READY, 0: no limit (default 7200)',
    )
    group.add_argument(
        '--poll-interval', type=float, default=30.0, help='seconds between polls (default 30)'
    )

    code = argparse.ArgumentParser(add_help=False)
    code.add_argument(
        '--source',
        type=pathlib.Path,
        default=REPO_ROOT,
        help='git work tree to copy: the files `git ls-files` lists, untracked ones too unless '
        'ignored (default: this repository)',
    )

    parser = argparse.ArgumentParser(
        prog='python -m launch.tpu',
        description='Run semvlp_jax on a Cloud TPU slice (TPU VM or queued resource) with gcloud. '
        'Spot and reserved capacity go through a queued resource.',
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest='command', required=True, metavar='SUBCOMMAND')

    def add(name, handler, help_text, *parents, epilog=None):
        sub = commands.add_parser(
            name,
            parents=[capacity, *parents],
            help=help_text,
            description=help_text,
            epilog=epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        sub.set_defaults(handler=handler)
        return sub

    add('create', _create, 'request the capacity (does not wait for it)')
    add('wait', _wait, 'poll until the capacity is ACTIVE (queued) / READY (TPU VM)', waiting)
    add(
        'setup',
        _setup,
        'copy the code to every worker (a tarball of `git ls-files`) and install it there: '
        'a virtual environment ~/semvlp_venv, pip install -e ".[tpu]"',
        code,
    )
    add(
        'preflight',
        _preflight,
        'on every worker, kill what holds the TPU (/dev/accel*, /dev/vfio/*) and remove '
        '/tmp/libtpu_lockfile ("TPU in use" after a crash); `run` does this first',
    )
    run = add(
        'run',
        _run,
        'run a config on every worker: preflight, then python -m semvlp_jax.main --config CONFIG '
        '--workdir WORKDIR --multihost [TRAINER_ARGS], one ssh per worker, fail fast. '
        'TRAINER_ARGS: whatever follows a lone --, e.g. -- --config.total_steps=1000',
        waiting,
        code,
        epilog=EXAMPLES,
    )
    run.add_argument('--config', required=True, help='e.g. configs/demo.py (relative to the code)')
    run.add_argument(
        '--workdir',
        required=True,
        help='run directory shared by every worker: gs://BUCKET/PATH (the same one resumes)',
    )
    run.add_argument('--create', action='store_true', help='create, wait and set up first')
    run.add_argument('--setup', action='store_true', help='set up (copy + install) first')
    run.add_argument(
        '--delete',
        action='store_true',
        help='delete the capacity when the command ends, whatever the outcome (Ctrl-C too)',
    )
    run.add_argument(
        '--until-done',
        action='store_true',
        help='after a preemption (capacity SUSPENDED/FAILED/PREEMPTED/gone, trainer exit 143, '
        'ssh exit 255): delete, recreate, wait, set up and rerun; any other failure stops',
    )
    run.add_argument(
        '--max-restarts',
        type=int,
        default=5,
        help='--until-done: preemptions to recover from before giving up (default 5)',
    )
    logs = add('logs', _logs, "print the end of each worker's log (written by `run`)")
    logs.add_argument('--worker', type=int, help='only this worker')
    logs.add_argument('--lines', type=int, default=20, help='lines per log (default 20)')
    add('delete', _delete, 'delete the capacity (a queued resource with its node)')
    return parser


def capacity_from(args: argparse.Namespace) -> Capacity:
    runtime = args.runtime_version
    if runtime is None and args.accelerator_type:
        runtime = gcloud.runtime_version(args.accelerator_type)
    return Capacity(
        name=args.name,
        zone=args.zone,
        project=args.project,
        accelerator_type=args.accelerator_type,
        runtime_version=runtime,
        queued=args.queued or args.spot or args.reserved,
        provisioning='spot' if args.spot else 'reserved' if args.reserved else 'on-demand',
    )


def main(argv: Sequence[str] | None = None, *, clock: Clock | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if '--' in argv:  # the rest goes to the trainer, e.g. --config.total_steps=1000
        split = argv.index('--')
        argv, extra = argv[:split], argv[split + 1 :]
    parser = build_parser()
    args = parser.parse_args(argv)
    if extra and args.command != 'run':
        parser.error('arguments after -- go to the trainer: only `run` takes them')
    if args.spot and args.reserved:
        parser.error('--spot and --reserved are two kinds of capacity: pass one')
    try:
        launcher = Launcher(
            capacity_from(args),
            log_dir=args.log_dir or pathlib.Path(LOG_ROOT) / args.name,
            dry_run=args.dry_run,
            num_workers=args.num_workers,
            wait_timeout=getattr(args, 'wait_timeout', 0.0),
            poll_interval=getattr(args, 'poll_interval', 30.0),
            clock=clock,
        )
        return args.handler(launcher, args, extra)
    except LaunchError as e:
        print(f'launch: error: {e}', file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            'launch: interrupted (trainers may still run on the workers: `preflight` stops them)',
            file=sys.stderr,
        )
        return 130


if __name__ == '__main__':
    sys.exit(main())
