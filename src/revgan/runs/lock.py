"""One writer per run folder: an exclusive lock held by the training process.

The lock is an ``flock`` on ``<run>/.lock``, which the kernel (or the NFS server) releases when
its holder dies, even by SIGKILL: a lock file left behind by a dead process is therefore
recognised as stale and taken over. The file names the holder (pid, host, start time) so a
refused second ``train`` can say who writes the folder. Where the file system has no
``flock`` (some Lustre mounts), the pid is checked instead, which can only tell a dead
holder on this host. Readers (``test``, ``translate``) take no lock.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import time
from pathlib import Path

from revgan.errors import UserError

LOCK_NAME = ".lock"
_NO_FLOCK = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


class RunFolderBusy(UserError):
    """Another live process is writing the run folder."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _describe(owner: dict) -> str:
    since = owner.get("started")
    when = time.strftime(" since %Y-%m-%d %H:%M:%S", time.localtime(since)) if since else ""
    return f"pid {owner.get('pid', '?')} on host {owner.get('host', '?')}{when}"


class RunLock:
    """``acquire()`` takes the folder's lock or raises :class:`RunFolderBusy`; ``release()``."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.fd: int | None = None
        self.taken_over: dict | None = None  # the dead holder whose stale lock was taken

    @property
    def held(self) -> bool:
        return self.fd is not None

    def _read_owner(self, fd: int) -> dict:
        try:
            raw = os.pread(fd, 4096, 0)
            owner = json.loads(raw.decode("utf-8")) if raw.strip() else {}
        except (OSError, ValueError):
            return {}
        return owner if isinstance(owner, dict) else {}

    def _refuse(self, owner: dict) -> None:
        raise RunFolderBusy(f"{self.folder} is being written by another training process "
                            f"({_describe(owner)}); wait for it to end or stop it, or train "
                            "under another --name")

    def _lock(self, fd: int) -> None:
        """flock, or where the file system has none, a check that the named holder is dead."""
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            self._refuse(self._read_owner(fd))
        except OSError as exc:
            if exc.errno not in _NO_FLOCK:
                raise
        owner = self._read_owner(fd)
        if owner and owner.get("pid") != os.getpid():
            if owner.get("host") != socket.gethostname():
                raise RunFolderBusy(f"{self.folder} is locked by {_describe(owner)} and this "
                                    f"file system cannot tell whether it still runs; if it "
                                    f"does not, delete {self.path}")
            pid = owner.get("pid")
            if isinstance(pid, int) and pid > 0 and _pid_alive(pid):
                self._refuse(owner)

    def acquire(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                self._lock(fd)
                # A holder that ended cleanly unlinks the file; if that happened between our
                # open and our lock, we locked a file no one else will see: open again.
                if os.fstat(fd).st_ino == os.stat(self.path).st_ino:
                    break
            except FileNotFoundError:
                pass
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)
        owner = self._read_owner(fd)
        self.taken_over = owner or None  # a clean holder leaves no file: this one died
        record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                             "started": time.time()}).encode("utf-8")
        os.ftruncate(fd, 0)
        os.pwrite(fd, record, 0)
        os.fsync(fd)
        self.fd = fd

    def release(self) -> None:
        if self.fd is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()  # still locked: a waiting opener re-checks the inode
        os.close(self.fd)
        self.fd = None

    def describe_taken_over(self) -> str | None:
        if not self.taken_over:
            return None
        return (f"took over the lock of {self.folder} left by {_describe(self.taken_over)}, "
                "which no longer runs")
