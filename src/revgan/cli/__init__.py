"""The ``revgan`` command line: one sub-command per job."""

from revgan.cli.main import main

__all__ = ["main"]
