"""Model domains versus data folders.

A model translates its domain A into its domain B. Training with ``--direction AtoB`` makes
model domain A the data folder ``A`` (``trainA``, ``testA``); ``--direction BtoA`` swaps them,
as upstream does. Everything that maps one to the other goes through :func:`folder_of`.
"""

from __future__ import annotations

from revgan.errors import UserError

DOMAINS = ("A", "B")


def other(domain: str) -> str:
    """The opposite domain: ``A`` <-> ``B``."""
    if domain not in DOMAINS:
        raise ValueError(f"a domain is 'A' or 'B', not {domain!r}")
    return "B" if domain == "A" else "A"


def folder_of(model_domain: str, direction: str) -> str:
    """The data folder (``A`` or ``B``) that holds model domain ``model_domain`` for a run
    trained in ``direction`` (the training direction, not an inference one)."""
    if direction not in ("AtoB", "BtoA"):
        raise UserError(f"--direction must be AtoB or BtoA, got '{direction}'")
    return model_domain if direction == "AtoB" else other(model_domain)


def ends(direction: str) -> tuple[str, str]:
    """(source, target) of a translation in ``direction``: ``("A", "B")`` for AtoB.

    Read with a training direction, these are the data folders holding model domains A and
    B; read with an inference direction, the model domains translated from and to."""
    return folder_of("A", direction), folder_of("B", direction)


def folder_channels(input_nc: int, output_nc: int, direction: str) -> tuple[int, int]:
    """Channels of the files in data folders A and B (model domain A has ``input_nc``)."""
    return (input_nc, output_nc) if ends(direction)[0] == "A" else (output_nc, input_nc)
