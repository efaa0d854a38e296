"""Shared test settings. Imported before any test module, so before torch."""

import os

# See revgan/__init__.py: passive OpenMP waiting keeps tests fast on a shared machine.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
