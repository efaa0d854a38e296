"""An ``argparse.ArgumentParser`` whose mistakes are :class:`UserError`\\ s, so a bad flag
ends like every other user error: one line on stderr and exit code 2.

Plain argparse prints its whole usage block (dozens of lines for ``revgan train``) before the
one line that matters; the usage stays one ``--help`` away.
"""

from __future__ import annotations

import argparse
from typing import NoReturn

from revgan.errors import UserError


class ArgumentParser(argparse.ArgumentParser):
    """Drop-in replacement for ``argparse.ArgumentParser``; ``--help`` works as usual."""

    def error(self, message: str) -> NoReturn:
        text = " ".join(message.split())  # argparse messages may wrap long choice lists
        raise UserError(f"{self.prog}: {text} (see '{self.prog} --help')")
