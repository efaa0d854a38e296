"""User-facing errors: one clear line and exit code 2, never a traceback."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import TypeVar

EXIT_USER_ERROR = 2

T = TypeVar("T")


class UserError(Exception):
    """A mistake the user can fix (bad path, flag, file or size). Printed as one line."""


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


def exits_cleanly(func: Callable[..., T]) -> Callable[..., T]:
    """Wrap a command entry point so that user errors end in one line and exit 2."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except UserError as exc:
            fail(str(exc))
        except KeyboardInterrupt:
            print("revgan: interrupted", file=sys.stderr)
            raise SystemExit(130) from None

    return wrapper
