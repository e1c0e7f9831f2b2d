"""One writer per workdir: an exclusive lock taken when a run starts.

A relaunch loop (launch/tpu.py `run --until-done`) or a second terminal makes two runs on one
workdir likely, and two writers interleave the histories and race inside orbax. The lock is the
file WORKDIR/workdir.lock, JSON naming its holder (host, pid, start time, a token) and a
heartbeat that the holder rewrites every `HEARTBEAT_SECONDS`.

Taking it: a free workdir is locked (on a local disk by an exclusive create, so two starting
runs cannot both win); a held lock refuses the run with one line naming the holder. A lock is
stale, and taken over with a warning, when its holder is a process of this host that no longer
exists, or, for a holder on another host (a shared disk, a `gs://` workdir), when its heartbeat
is older than `STALE_AFTER_SECONDS`. Object stores have no exclusive create: there the lock is
written, read back after a moment, and kept only if the token read is this run's.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import socket
import threading
import time
import uuid

from absl import logging
from etils import epath

LOCK_FILE = 'workdir.lock'
HEARTBEAT_SECONDS = 30.0
# Several missed heartbeats, so a slow store or a paused VM does not lose a live run its lock.
STALE_AFTER_SECONDS = 300.0
# On an object store: how long to wait before reading the lock back (another writer's object
# replaces ours within this time if two runs start together).
SETTLE_SECONDS = 2.0


class WorkdirLocked(RuntimeError):
    """Another live run holds the workdir."""


@dataclasses.dataclass(frozen=True)
class Holder:
    host: str
    pid: int
    started: float  # time.time() at start
    heartbeat: float  # time.time() of the last heartbeat
    token: str

    def describe(self, now: float) -> str:
        started = datetime.datetime.fromtimestamp(self.started).strftime('%Y-%m-%d %H:%M:%S')
        return (
            f'pid {self.pid} on host {self.host}, started {started}, '
            f'last heartbeat {now - self.heartbeat:.0f} s ago'
        )


def is_local(path: epath.Path) -> bool:
    return '://' not in os.fspath(path)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


class WorkdirLock:
    """The lock of one workdir; `acquire` / `release`, or a context manager."""

    def __init__(
        self,
        workdir: str | os.PathLike,
        *,
        heartbeat_seconds: float = HEARTBEAT_SECONDS,
        stale_after_seconds: float = STALE_AFTER_SECONDS,
        settle_seconds: float = SETTLE_SECONDS,
    ):
        self.path = epath.Path(workdir) / LOCK_FILE
        self.heartbeat_seconds = heartbeat_seconds
        self.stale_after_seconds = stale_after_seconds
        self.settle_seconds = settle_seconds
        now = time.time()
        self.holder = Holder(socket.gethostname(), os.getpid(), now, now, uuid.uuid4().hex)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ reading
    def read(self) -> Holder | None:
        """The holder the lock file names; None if there is none. A lock file that is not
        valid JSON (a write cut short) counts as stale: a holder rewrites it on each heartbeat."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return None
        try:
            return Holder(**json.loads(text))
        except (ValueError, TypeError):
            return Holder('?', -1, 0.0, 0.0, 'unreadable')

    def is_stale(self, holder: Holder, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        if holder.host == self.holder.host and holder.pid > 0:
            return not pid_alive(holder.pid)
        return now - holder.heartbeat > self.stale_after_seconds

    # ------------------------------------------------------------------ taking and leaving
    def acquire(self) -> WorkdirLock:
        held = self.read()
        if held is not None:
            if held.token == self.holder.token:
                return self
            if not self.is_stale(held):
                raise WorkdirLocked(
                    f'workdir {self.path.parent} is in use by another run ({held.describe(time.time())}; '
                    f'lock file {self.path}): stop that run, or use another --workdir'
                )
            logging.warning(
                'taking over the stale lock of %s (%s)',
                self.path.parent,
                held.describe(time.time()),
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if is_local(self.path) and held is None:
            self._create_exclusive()
        else:
            self._write()
            if not is_local(self.path):
                time.sleep(self.settle_seconds)
            won = self.read()
            if won is None or won.token != self.holder.token:
                raise WorkdirLocked(
                    f'workdir {self.path.parent}: another run took the lock at the same time '
                    f'({won.describe(time.time()) if won else "and released it"}); '
                    'use another --workdir or start one run'
                )
        self._thread = threading.Thread(target=self._beat, name='workdir-lock', daemon=True)
        self._thread.start()
        return self

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        held = self.read()
        if held is not None and held.token == self.holder.token:
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> WorkdirLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    # ------------------------------------------------------------------ writing
    def _text(self) -> str:
        return json.dumps(dataclasses.asdict(self.holder))

    def _create_exclusive(self) -> None:
        try:
            fd = os.open(os.fspath(self.path), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:  # another run created it since we looked
            held = self.read()
            raise WorkdirLocked(
                f'workdir {self.path.parent} is in use by another run '
                f'({held.describe(time.time()) if held else "that has just started"}; '
                f'lock file {self.path}): stop that run, or use another --workdir'
            ) from None
        with os.fdopen(fd, 'w') as f:
            f.write(self._text())

    def _write(self) -> None:
        if is_local(self.path):  # readers never see a half-written file
            temp = self.path.with_name(f'.{LOCK_FILE}.{self.holder.token}')
            temp.write_text(self._text())
            os.replace(temp, self.path)
        else:  # an object is replaced whole
            self.path.write_text(self._text())

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_seconds):
            held = self.read()
            if held is not None and held.token != self.holder.token:
                logging.error(
                    'the lock of %s was taken over by %s while this run held it',
                    self.path.parent,
                    held.describe(time.time()),
                )
                return
            self.holder = dataclasses.replace(self.holder, heartbeat=time.time())
            try:
                self._write()
            except OSError as e:  # a full disk or a network blip: the next beat tries again
                logging.warning('could not renew the lock %s: %s', self.path, e)
