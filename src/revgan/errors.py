"""User-facing errors: one clear line and exit code 2, never a traceback."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import TypeVar

EXIT_USER_ERROR = 2

T = TypeVar("T")


class UserError(Exception):
    """A mistake the user can fix (bad path, flag, file or size). Printed as one line."""


class Interrupted(Exception):
    """Work stopped on a signal at a safe point (its state saved): one line (none where the
    message is empty), then exit with ``exit_code`` (128 + the signal number)."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def one_line(message: str) -> str:
    """The user-facing line of a message; errors re-raised from data-loader workers carry
    the worker's traceback before it."""
    lines = [line.strip() for line in str(message).splitlines() if line.strip()]
    last = lines[-1] if lines else "unknown error"
    prefix = "revgan.errors.UserError: "
    return last[len(prefix):] if last.startswith(prefix) else last


def fail(message: str) -> None:
    """Print ``revgan: error: message`` on stderr and exit with code 2."""
    print(f"revgan: error: {one_line(message)}", file=sys.stderr)
    raise SystemExit(EXIT_USER_ERROR)


def describe_os_error(exc: OSError) -> str:
    """One line for a file-system error: what went wrong and on which path."""
    if exc.strerror and exc.filename is not None:
        target = f"{exc.filename}" + (f" -> {exc.filename2}" if exc.filename2 else "")
        return f"{exc.strerror}: {target}"
    return one_line(str(exc)) if str(exc).strip() else type(exc).__name__


def exits_cleanly(func: Callable[..., T]) -> Callable[..., T]:
    """Wrap a command entry point so that user errors end in one line and exit 2.

    File-system errors (a path under a regular file, no permission, disk full) are the
    user's to fix too, wherever they surface; ``REVGAN_DEBUG=1`` shows their traceback.
    """

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except UserError as exc:
            fail(str(exc))
        except OSError as exc:
            if os.environ.get("REVGAN_DEBUG"):
                raise
            fail(describe_os_error(exc))
        except Interrupted as exc:
            if str(exc):
                print(f"revgan: {exc}", file=sys.stderr)
            raise SystemExit(exc.exit_code) from None
        except KeyboardInterrupt:
            print("revgan: interrupted", file=sys.stderr)
            raise SystemExit(130) from None

    return wrapper


def require_creatable(folder: str | os.PathLike, what: str = "folder") -> None:
    """Refuse early (before any work) a folder that cannot exist: one below a regular file.

    Creates nothing. Permission problems still surface when writing (root may write anywhere).
    """
    path = os.path.abspath(folder)
    while not os.path.exists(path):
        parent = os.path.dirname(path)
        if parent == path:
            return
        path = parent
    if not os.path.isdir(path):
        raise UserError(f"cannot create {what} {folder}: {path} is a file, not a folder")
