"""The run-folder lock: one training process writes a run folder at a time (issue 24: two
``train --resume`` on one folder at once wrote 217 metrics rows for 120 steps).

``RUN/.lock`` holds the holder's pid, host and start time (JSON) and is held with
``fcntl.flock(LOCK_EX | LOCK_NB)`` for the whole run: the kernel takes it atomically and drops it
when the process dies, even by SIGKILL, so a lock file left behind by a dead process (a stale lock)
is found unlocked, reported and replaced. The file is removed on release; a process that opened
it just before that removal sees its inode gone and opens the new file. On a file system without
``flock`` the file's contents decide: a live pid on this host, or any other host's lock, is
respected; a dead pid on this host is stale.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
from datetime import datetime, timezone
from pathlib import Path

NAME = ".lock"


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def describe(holder: dict | None) -> str:
    if not holder:
        return "a process that left no pid"
    return f"pid {holder.get('pid')} on host {holder.get('host')}, since {holder.get('since', '?')}"


class RunLock:
    """``acquire()`` / ``release()`` the lock of one run folder; ``locked_error`` builds the
    exception (the caller's TrainError) raised when another process holds it."""

    def __init__(self, folder: str | Path, locked_error=RuntimeError):
        self.folder = Path(folder)
        self.path = self.folder / NAME
        self.fd: int | None = None
        self.locked_error = locked_error

    def _read(self, fd: int) -> dict | None:
        try:
            data = json.loads(os.pread(fd, 4096, 0).decode("utf-8") or "null")
            return data if isinstance(data, dict) else None
        except (OSError, ValueError):
            return None

    def _refuse(self, holder: dict | None):
        return self.locked_error(
            f"{self.folder} is being trained by another process ({describe(holder)}); two writers would "
            f"corrupt metrics.jsonl and the checkpoints. Wait for it to end or stop it; if that process is "
            f"gone on another host, remove {self.path}")

    def acquire(self) -> str | None:
        """Take the lock (the caller's ``locked_error`` when another live process holds it); returns a
        note when a stale lock was replaced, else None."""
        if self.fd is not None:
            return None
        me = {"pid": os.getpid(), "host": socket.gethostname(),
              "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = self._read(fd)
                os.close(fd)
                raise self._refuse(holder) from None
            except OSError:  # no flock on this file system: the contents decide
                holder = self._read(fd)
                if holder and holder.get("pid") != me["pid"] and (
                        holder.get("host") != me["host"] or pid_alive(int(holder.get("pid", 0)))):
                    os.close(fd)
                    raise self._refuse(holder) from None
                break
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # released and removed between our open and flock: open the new file
        old = self._read(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode("utf-8"), 0)
        self.fd = fd
        if old and old.get("pid") != me["pid"]:
            return f"replaced a stale lock of {describe(old)} (that process is gone)"
        return None

    def release(self) -> None:
        """Drop the lock and remove the file (no-op when not held)."""
        if self.fd is None:
            return
        fd, self.fd = self.fd, None
        try:
            if os.fstat(fd).st_ino == os.stat(self.path).st_ino:
                os.unlink(self.path)
        except OSError:
            pass
        os.close(fd)  # closing drops the flock


__all__ = ["NAME", "RunLock", "describe", "pid_alive"]
