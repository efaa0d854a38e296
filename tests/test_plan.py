"""`revgan plan`: the largest crop/patch and batch within a memory budget."""

from __future__ import annotations

import pytest
from helpers import cli_error, run_cli

from revgan.errors import UserError
from revgan.train.plan import PlanOptions, fit_line, parse_bytes, plan_budget


def test_parse_bytes():
    assert parse_bytes("16GiB") == 16 * 2**30
    assert parse_bytes("1.5 GB") == 1_500_000_000
    assert parse_bytes("800mib") == 800 * 2**20
    assert parse_bytes("2048") == 2048
    for bad in ("lots", "16 GiBs", "-1GB", "0"):
        with pytest.raises(UserError):
            parse_bytes(bad)


def test_fit_line_is_exact_through_two_points():
    assert fit_line([(100, 1300), (300, 1700)]) == pytest.approx((1100, 2))


def tiny(**kw) -> PlanOptions:
    values = dict(model="unpaired_revgan", budget="1GiB", ngf=4, ndf=4,
                  netG="resnet_2blocks", probe=(32, 64), gpu_ids="-1")
    return PlanOptions(**{**values, **kw})


def test_plan_solves_the_fitted_line_for_the_budget():
    result = plan_budget(tiny(side=64))
    assert result.largest_side % result.multiple == 0 and result.largest_side > 64
    assert result.per_voxel > 0
    assert result.predicted(result.largest_side) <= result.budget
    assert result.predicted(result.largest_side + result.multiple) > result.budget
    assert result.largest_batch >= 1
    assert result.predicted(64, result.largest_batch) <= result.budget
    assert result.predicted(64, result.largest_batch + 1) > result.budget
    smaller = plan_budget(tiny(budget="256MiB"))
    assert smaller.largest_side < result.largest_side


def test_plan_follows_recompute_stages():
    """Re-running the encoders/decoders keeps less per voxel, so more fits."""
    on, off = (plan_budget(tiny(recompute_stages=v)) for v in ("on", "off"))
    assert on.per_voxel < off.per_voxel
    assert on.largest_side >= off.largest_side


def test_plan_cli_prints_the_answer_and_refuses_bad_input(capsys):
    run_cli("plan", "--model", "cycle_gan", "--budget", "512MiB", "--ngf", "4", "--ndf", "4",
            "--netG", "resnet_2blocks", "--probe", "32,64", "--gpu_ids", "-1")
    out = capsys.readouterr().out
    assert "largest crop at batch 1:" in out
    assert "budget 0.50 GiB" in out
    assert "memory size" in cli_error(capsys, "plan", "--model", "cycle_gan", "--budget", "big")
    assert "does not fit" in cli_error(capsys, "plan", "--model", "cycle_gan", "--budget",
                                       "64KiB", "--gpu_ids", "-1", "--probe", "32,64",
                                       "--ngf", "4", "--ndf", "4", "--netG", "resnet_2blocks")
    assert "two different sides" in cli_error(capsys, "plan", "--model", "cycle_gan",
                                              "--budget", "1GiB", "--probe", "32",
                                              "--gpu_ids", "-1", "--ngf", "4")
