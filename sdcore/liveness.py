"""Who owns a run folder (or a sweep) right now: one rule that holds on a laptop and across a cluster's nodes.

The owner writes its record into ``<folder>/lock`` and keeps it there while it works:

    {"host": "node017", "pid": 4242, "since": "2026-12-08T03:12:09", "beat": 1796703129.5, "nonce": "9f…"}

and empties the file when it lets go. Two signals say whether that owner is still alive, because no
single one holds everywhere:

* **flock**, the fast path. The owner holds an exclusive flock on the file; the OS drops it when the
  process dies, so on one machine "someone holds the flock" is exact, with no pid reuse and no clock.
  A cluster's shared filesystem may not share it, though: Lustre mounted ``localflock`` keeps flocks per
  node (a lock taken on node A is invisible on node B), ``noflock`` makes flock fail, and some NFS
  setups do either.
* **the heartbeat**. The owner's process rewrites ``beat`` (its wall clock, in seconds) every
  ``HEARTBEAT_S`` from one background thread (``Heartbeat``). A record written by another host is
  taken as alive while its beat is less than ``STALE_S`` away from this host's clock; older, its owner
  is dead (node failure, SIGKILL, out of memory) and the run may be taken over and resumed.

``held`` is the whole rule:

    the flock is refused                       -> held   (by a process of this host, or of a host sharing flocks)
    empty or unreadable record                 -> free   (released, or never written)
    written by this host, flock works here     -> free   (we just got the flock: its writer is gone)
    written by this host, no flock here        -> held iff its pid is a live process
    written by another host                    -> held iff |now - beat| < STALE_S

Limits, by construction. Clocks of different hosts are compared: a skew up to STALE_S - HEARTBEAT_S is
tolerated (NTP keeps a cluster within milliseconds). An owner frozen longer than STALE_S (SIGSTOP, a
hung filesystem) is taken for dead; when it wakes, its heartbeat finds another owner's nonce in the file,
marks its lock ``lost`` and stops writing rather than overwrite the new owner. Two hosts taking over one
stale lock at the same instant are told apart by reading the nonce back after writing it: the later
writer wins, the other gives up.
"""
from __future__ import annotations

import errno
import json
import os
import platform
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Callable, Protocol

try:
    import fcntl
except ImportError:  # Windows: no flock; the pid in the record decides
    fcntl = None

HEARTBEAT_S = 15.0  # how often an owner rewrites its beat
STALE_S = 120.0  # a beat from another host older than this: its owner is dead
RECORD_BYTES = 1024  # the record is rewritten in place at this size, so a reader never meets a shortened file
HOST_CHARS = 64  # Linux's HOST_NAME_MAX: at most 64 characters, even escaped in JSON, keep a record in RECORD_BYTES

clock: Callable[[], float] = time.time  # the wall clock, comparable across hosts (tests replace it)


def this_host() -> str:
    return platform.node()[:HOST_CHARS]


@dataclass(frozen=True)
class Owner:
    host: str
    pid: int
    beat: float  # the owner's wall clock at its last heartbeat, seconds since the epoch
    since: str = ""
    nonce: str = ""

    def record(self) -> bytes:
        """The record as written: JSON padded with spaces to RECORD_BYTES."""
        d = {"host": self.host[:HOST_CHARS], "pid": self.pid, "since": self.since[:40], "beat": round(self.beat, 3),
             "nonce": self.nonce[:32]}
        return json.dumps(d).encode().ljust(RECORD_BYTES)

    @staticmethod
    def parse(data: bytes, *, mtime: float) -> "Owner | None":
        """The record in ``data``; None for an empty (released) or unreadable one. A record of sdlab before
        heartbeats has no beat: the file's modification time stands in for it."""
        try:
            d = json.loads(data.decode("utf-8").strip(" \0\n") or "null")
            if not isinstance(d, dict) or not isinstance(d.get("host"), str):
                return None
            pid, beat = int(d["pid"]), d.get("beat", mtime)
            if isinstance(beat, bool) or not isinstance(beat, (int, float)):
                return None
            return Owner(host=d["host"], pid=pid, beat=float(beat), since=str(d.get("since", "")),
                         nonce=str(d.get("nonce", "")))
        except (ValueError, KeyError, TypeError, RecursionError):
            return None

    def age(self, now: float) -> float:
        return now - self.beat

    def where(self, now: float) -> str:
        """'on host node017 (pid 4242, heartbeat 40 s ago)': for messages."""
        return f"on host {self.host} (pid {self.pid}, heartbeat {max(0.0, self.age(now)):.0f} s ago)"


def held(owner: Owner | None, flock_taken: bool | None, *, now: float, host: str,
         alive: Callable[[int], bool]) -> bool:
    """Is the lock held by a live owner? ``flock_taken``: True if this probe got the flock, False if another
    holder has it, None where this filesystem has no flock. (The table in the module's docstring.)"""
    if flock_taken is False:
        return True
    if owner is None:
        return False
    if owner.host == host:
        return flock_taken is None and alive(owner.pid)
    return abs(now - owner.beat) < STALE_S


def try_flock(fd: int) -> bool | None:
    """Try an exclusive flock: True if taken, False if another process holds it, None where this system or
    filesystem has no flock (Windows; ENOLCK, EINVAL, EOPNOTSUPP or ENOSYS from a ``noflock`` mount)."""
    if fcntl is None:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    except OSError as e:
        if e.errno in (errno.ENOLCK, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOSYS):
            return None
        raise


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return pid > 0  # exists but belongs to someone else (OverflowError/ValueError: not a pid)
    return True


def read_owner(fd: int) -> Owner | None:
    """The record in the open lock file ``fd`` (read from its start, whatever the file position)."""
    data = os.pread(fd, RECORD_BYTES * 2, 0)
    return Owner.parse(data, mtime=os.fstat(fd).st_mtime)


class Beating(Protocol):
    def beat(self) -> None: ...


class Heartbeat:
    """One daemon thread per process that calls ``beat()`` on every held lock each HEARTBEAT_S.

    A thread, not a beat per training epoch: an epoch of a paper-sized run takes minutes, longer than
    STALE_S, and analyses or a queued job hold locks without any epochs at all.
    """

    def __init__(self) -> None:
        self._locks: "weakref.WeakSet[Beating]" = weakref.WeakSet()
        self._guard = threading.Lock()
        self._thread: threading.Thread | None = None

    def add(self, lock: Beating) -> None:
        with self._guard:
            self._locks.add(lock)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="sdlab-heartbeat", daemon=True)
                self._thread.start()

    def discard(self, lock: Beating) -> None:
        with self._guard:
            self._locks.discard(lock)

    def _run(self) -> None:
        while True:
            time.sleep(HEARTBEAT_S)
            with self._guard:
                locks = list(self._locks)
            for lock in locks:
                try:
                    lock.beat()
                except OSError:  # a filesystem hiccup: the next beat tries again, well within STALE_S
                    continue


HEARTBEAT = Heartbeat()
