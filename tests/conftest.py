"""Shared test settings. Imported before any test module, so before torch.

Missing system prerequisites: a test that needs something pip cannot install (a Chromium
browser, glibc's ``mallinfo2``) calls the ``require`` fixture. On a developer's machine a
missing prerequisite is a skip whose reason says how to get it; with ``REVGAN_STRICT=1`` (set
by ``.ci/run``) it is a failure, so CI cannot go green without really running those tests.
"""

import os

import pytest

# See revgan/__init__.py: passive OpenMP waiting keeps tests fast on a shared machine.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

STRICT_VARIABLE = "REVGAN_STRICT"


def strict() -> bool:
    """Whether a missing prerequisite fails the test instead of skipping it."""
    return os.environ.get(STRICT_VARIABLE, "") not in ("", "0")


def require_prerequisite(condition: bool, reason: str) -> None:
    """Skip (or under ``REVGAN_STRICT=1`` fail) the running test unless ``condition``."""
    if condition:
        return
    if strict():
        pytest.fail(f"{reason} ({STRICT_VARIABLE}=1 makes this a failure)", pytrace=False)
    # reported at the test's own location, not this line's (as a skipif mark is)
    raise pytest.skip.Exception(reason, _use_item_location=True)


@pytest.fixture(scope="session")
def require():
    """``require(condition, reason)``: see :func:`require_prerequisite`."""
    return require_prerequisite


def pytest_report_header(config) -> str:
    value = os.environ.get(STRICT_VARIABLE, "")
    mode = "fail" if strict() else "skip"
    return f"missing system prerequisites: {mode} ({STRICT_VARIABLE}={value!r})"
