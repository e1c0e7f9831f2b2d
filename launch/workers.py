"""One command per worker, side by side: each worker's output to its own log, fail fast.

Each command (an `ssh --worker=I`) runs in its own process group, so ending it ends gcloud and the
ssh it started. Worker 0's lines are also shown on the console, prefixed. The first worker to exit
non-zero ends the others; its index, status and log are returned.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import queue
import signal
import subprocess
import threading
from collections.abc import Sequence
from typing import TextIO

# How long an ended command gets to exit after SIGTERM before SIGKILL, and how long its output
# may take to drain.
TERMINATE_GRACE_S = 5.0


def log_path(log_dir: pathlib.Path, worker: int) -> pathlib.Path:
    return log_dir / f'worker-{worker}.log'


@dataclasses.dataclass(frozen=True)
class WorkerFailure:
    worker: int
    status: int  # the command's exit status (negative: killed by that signal)
    log: pathlib.Path


def run_workers(
    commands: Sequence[Sequence[str]],
    log_dir: pathlib.Path,
    *,
    console: TextIO,
    header: str | None = None,
) -> WorkerFailure | None:
    """Runs `commands[i]` for worker i; None when all exit 0.

    `header` (e.g. a restart's reason) starts a new section in logs kept from an earlier attempt;
    without it the logs are written afresh.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    exits: queue.Queue[tuple[int, int]] = queue.Queue()
    procs: list[subprocess.Popen] = []
    pumps: list[threading.Thread] = []
    failure = None
    try:
        for worker, command in enumerate(commands):
            log = log_path(log_dir, worker).open('a' if header else 'w')
            if header:
                log.write(f'--- {header} ---\n')
                log.flush()
            try:
                proc = subprocess.Popen(
                    list(command),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                    errors='replace',
                    start_new_session=True,
                )
            except OSError:
                log.close()
                raise
            procs.append(proc)
            follow = console if worker == 0 else None
            pump = threading.Thread(
                target=_pump, args=(worker, proc, log, follow, exits), daemon=True
            )
            pump.start()
            pumps.append(pump)
        for _ in commands:
            worker, status = exits.get()
            if status != 0:
                failure = WorkerFailure(worker, status, log_path(log_dir, worker))
                break
    finally:
        for proc in procs:
            if proc.poll() is None:
                _terminate(proc)
        for pump in pumps:
            pump.join(TERMINATE_GRACE_S)
    return failure


def _pump(worker, proc, log, console, exits):
    with log:
        for line in proc.stdout:
            log.write(line)
            log.flush()
            if console is not None:
                console.write(f'[worker {worker}] {line}')
                console.flush()
    exits.put((worker, proc.wait()))


def _terminate(proc: subprocess.Popen) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(TERMINATE_GRACE_S)
            return
        except subprocess.TimeoutExpired:
            continue
