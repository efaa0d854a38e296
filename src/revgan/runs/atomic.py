"""The one atomic writer: write under a temporary name in the same folder, fsync, rename.

A reader (a browser, ``revgan test`` while training runs, a crash-restart) sees the old file
or the new one, never half of one; a failed write leaves no partial file behind. A write that
fails for lack of space (a full disk, a quota, a file-size limit) is one clear error.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from revgan.errors import UserError

NO_SPACE = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}


class DiskFullError(UserError):
    """A write failed for lack of space or over a file-size limit; nothing was replaced."""


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


TEMP_SUFFIX = ".tmp"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically."""
    path = Path(path)
    temp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
        os.close(fd)
        temp = Path(name)
        yield temp
        # mkstemp makes the file private (0600); a file written in place would get the
        # user's umask, and so does this one (shared run and result folders stay readable)
        os.chmod(temp, 0o666 & ~_umask())
        with open(temp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except OSError as exc:
        if exc.errno in NO_SPACE:
            kept = "; the earlier version is kept" if path.exists() else ""
            raise DiskFullError(f"cannot write {path}: {exc.strerror} (disk full, quota or "
                                f"file-size limit); the partial file is removed{kept}") from exc
        raise
    finally:
        if temp is not None:
            temp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    with atomic_path(path) as temp:
        temp.write_bytes(data)


def atomic_write_text(path: Path | str, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))
