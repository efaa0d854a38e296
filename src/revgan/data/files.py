"""Listing the data files below a folder, refusing what would silently go wrong.

``Path.rglob`` skips folders it cannot read, ignores symbolic links that loop or dangle and
never enters linked folders. A dataset read that way can lose files without a word, so
:func:`list_data_files` walks the tree itself: linked folders are followed (datasets are
often farms of links), and one clear :class:`UserError` names the path when a link loops,
dangles, a folder cannot be read, or a name is not valid UTF-8 (such names cannot be shown,
written to pages or compared reliably).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path

from revgan.config import RunConfig
from revgan.errors import UserError


def shown(path: str | os.PathLike) -> str:
    """A path as text that any terminal and file can hold (undecodable bytes as ``\\xNN``)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def check_readable(path: str | os.PathLike, what: str) -> None:
    """Refuse, in one line, a file this process may not open (permissions, a dangling link)."""
    try:
        with open(path, "rb") as handle:
            handle.read(1)
    except OSError as exc:
        raise UserError(f"cannot read {what} {shown(path)}: {exc.strerror or exc}") from None


def _check_name(path: str) -> None:
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes arrive as lone surrogates
        raise UserError(f"file name is not valid UTF-8: {shown(path)}; rename it") from None


def list_data_files(folder: str | Path, accept: Callable[[Path], bool],
                    accept_folder: Callable[[Path], bool] | None = None) -> list[Path]:
    """Every file below ``folder`` that ``accept`` takes, and every folder (``folder``
    included) that ``accept_folder`` takes as one item (not entered), sorted.

    ``folder`` must exist. Linked folders are followed; a link back into a folder above it
    is a loop and an error.
    """
    found: list[Path] = []
    # Real folders on the path from the root to the folder being read: a linked folder
    # resolving to one of them would be walked forever.
    ancestors: list[tuple[int, int]] = []

    def walk(current: str) -> None:
        if accept_folder is not None and accept_folder(Path(current)):
            _check_name(current)
            found.append(Path(current))
            return
        try:
            status = os.stat(current)
            entries = sorted(os.scandir(current), key=lambda e: e.name)
        except OSError as exc:
            raise UserError(f"cannot read folder {shown(current)}: "
                            f"{exc.strerror or exc}") from None
        key = (status.st_dev, status.st_ino)
        if key in ancestors:
            raise UserError(f"symbolic link loop: {shown(current)} leads back to "
                            f"{shown(os.path.realpath(current))}; remove the link")
        ancestors.append(key)
        for entry in entries:
            path = Path(entry.path)
            try:
                is_dir = entry.is_dir()
                is_file = entry.is_file()
            except OSError as exc:
                raise UserError(f"cannot read {shown(path)}: {exc.strerror or exc}") from None
            if is_dir:
                walk(entry.path)
            elif is_file:
                if accept(path):
                    _check_name(entry.path)
                    found.append(path)
            elif entry.is_symlink() and accept(path):
                # is_dir/is_file are both false for a link that loops or points nowhere
                try:
                    os.stat(entry.path)
                    reason = "is not a regular file"
                except OSError as exc:
                    reason = f"is a broken symbolic link ({exc.strerror})"
                raise UserError(f"{shown(path)} {reason}; remove or fix it")
        ancestors.pop()

    walk(str(folder))
    return sorted(found)


def limit_paths(paths: list[Path], opt: RunConfig) -> list[Path]:
    limit = opt.max_dataset_size
    if limit is None or limit == math.inf:
        return paths
    if limit < 1:
        raise UserError(f"--max_dataset_size must be at least 1, got {limit}")
    return paths[: int(limit)]


def dataset_root(opt: RunConfig) -> Path:
    dataroot = opt.dataroot
    if not dataroot:
        raise UserError("--dataroot is required")
    root = Path(dataroot)
    if root.exists() and not root.is_dir():
        raise UserError(f"--dataroot {root} is a file; give the dataset folder")
    if not root.is_dir():
        raise UserError(f"dataroot not found: {root}")
    return root
