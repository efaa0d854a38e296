"""A smoke run of benchmarks/profile_step_memory.py: phases found, activations attributed."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH_DIR))  # the script imports benchmarks/harness.py


def _load():
    path = BENCH_DIR / "profile_step_memory.py"
    spec = importlib.util.spec_from_file_location("_profile_step_memory", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_smoke_profile_attributes_saved_activations_to_stages():
    profile = _load()
    values = {"ngf": 4, "ndf": 4, "netG": "edsrF_2"}
    off = profile.profile("paired_revgan", 32, {**values, "recompute_stages": "off"})
    on = profile.profile("paired_revgan", 32, {**values, "recompute_stages": "on"})
    names = [p[0] for p in off["phases"]]
    assert names[0] == "whole step" and "G group 0 forward" in names
    assert any(n.startswith("D step") for n in names)
    assert len(off["saved"]) == 2  # one group per direction
    group = off["saved"][0]
    assert {"encoder_A", "decoder_B", "core", "D_B"} <= set(group)
    # recomputed stages keep only their inputs: the decoder keeps nothing of its own
    assert on["saved"][0].get("decoder_B", 0) == 0
    assert on["saved"][0]["encoder_A"] < group["encoder_A"] / 4  # its input only
    assert on["saved"][0]["D_B"] == group["D_B"]
