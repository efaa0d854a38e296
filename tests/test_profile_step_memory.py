"""A smoke run of benchmarks/profile_step_memory.py: phases found, activations attributed."""

from __future__ import annotations

from helpers import load_benchmark


def _load():
    return load_benchmark("profile_step_memory")


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
