"""revgan: memory-efficient image-to-image translation in 2D and 3D with reversible GANs."""

import os
import sys

__version__ = "0.1.0"

# OpenMP threads that spin while waiting make PyTorch's CPU kernels 10-30x slower as soon as
# another process competes for the cores (measured here: 0.24 s vs 10 s per training step on
# 2 busy cores). Waiting passively costs nothing measurable on an idle machine. This only
# takes effect if revgan is imported before torch, as the command line does.
if "torch" not in sys.modules:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def load(model_dir, epoch: str = "latest", device="cpu"):
    """A run folder's generator as a :class:`revgan.api.Translator` (``t.translate(x)``).

    Imported here only when called, so ``import revgan`` stays cheap (no torch)."""
    from revgan.api import load as load_run

    return load_run(model_dir, epoch, device)
