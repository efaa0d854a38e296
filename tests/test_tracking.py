"""RunLogger: upstream loss_log.txt format, TensorBoard events, resume, disabled mode."""

from __future__ import annotations

import json
import re

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from revgan.errors import UserError
from revgan.reporting.tracking import RunLogger, format_loss_line, parse_loss_log

UPSTREAM_LINE = re.compile(
    r"^\(epoch: \d+, iters: \d+, time: \d+\.\d{3}, data: \d+\.\d{3}\)( \w+: -?\d+\.\d{3})+$")


def _events(log_dir):
    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


def test_loss_log_format_and_tensorboard(tmp_path) -> None:
    log = RunLogger(tmp_path, "run", dataset_size=200, echo=False)
    log.log_losses(1, 100, 100, {"G_A": 0.5, "D_A": 0.25}, lrs={"G": 2e-4}, t_comp=0.1234,
                   t_data=0.001)
    log.log_losses(1, 200, 200, {"G_A": 0.4, "D_A": 0.2}, lrs={"G": 2e-4})
    log.log_images(200, {"real_A": torch.zeros(1, 1, 8, 8),
                         "fake_B": torch.zeros(1, 1, 4, 8, 8)}, dims=None)
    log.log_metrics(200, 1, {"PSNR": 21.5, "SSIM": 0.7})
    log.close()

    lines = (tmp_path / "loss_log.txt").read_text().splitlines()
    assert lines[0].startswith("================ Training Loss (")
    assert lines[1] == "(epoch: 1, iters: 100, time: 0.123, data: 0.001) G_A: 0.500 D_A: 0.250"
    assert all(UPSTREAM_LINE.match(line) for line in lines[1:])

    acc = _events(tmp_path / "tensorboard")
    tags = acc.Tags()
    assert {"losses/G_A", "losses/D_A", "lr/G", "metrics/PSNR", "metrics/SSIM"} <= set(
        tags["scalars"])
    assert [(e.step, round(e.value, 6)) for e in acc.Scalars("losses/G_A")] == [
        (100, 0.5), (200, 0.4)]
    assert acc.Scalars("metrics/PSNR")[0].value == pytest.approx(21.5)
    assert {"visuals/real_A", "visuals/fake_B"} <= set(tags["images"])
    vol_image = acc.Images("visuals/fake_B")[0]
    assert (vol_image.height, vol_image.width) == (8, 8 + 2 + 8 + 2 + 8)  # mid-slice montage

    metrics = [json.loads(x) for x in (tmp_path / "val_metrics.jsonl").read_text().splitlines()]
    assert metrics == [{"step": 200, "epoch": 1.0, "PSNR": 21.5, "SSIM": 0.7}]

    hist = log.history()
    assert hist["G_A"] == [(0.5, 0.5), (1.0, 0.4)]  # x = epochs completed
    assert log.history("lr")["G"] == [(0.5, 2e-4), (1.0, 2e-4)]
    assert log.history("metrics") == {"PSNR": [(1.0, 21.5)], "SSIM": [(1.0, 0.7)]}


def test_resume_reloads_history_and_plots(tmp_path) -> None:
    first = RunLogger(tmp_path, "run", use_tensorboard=False, dataset_size=10, echo=False)
    first.log_losses(1, 10, 10, {"G": 1.25})
    first.log_metrics(10, 1, {"MAE": 0.3, "PSNR": float("inf")})
    first.close()
    second = RunLogger(tmp_path, "run", use_tensorboard=False, dataset_size=10, echo=False)
    second.log_losses(2, 5, 15, {"G": 0.75})
    assert second.history()["G"] == [(1.0, 1.25), (1.5, 0.75)]
    assert second.history("metrics")["MAE"] == [(1.0, 0.3)]
    assert len(parse_loss_log(tmp_path / "loss_log.txt")) == 2
    paths = second.write_plots(tmp_path / "web")
    assert [p.name for p in paths] == ["losses.png", "metric_MAE.png", "metric_PSNR.png"]
    assert all(p.stat().st_size > 1000 for p in paths)
    assert not (tmp_path / "tensorboard").exists()


def test_disabled_logger_writes_nothing(tmp_path) -> None:
    log = RunLogger(tmp_path / "ckpt", "run", enabled=False)
    log.log_losses(1, 1, 1, {"G": 1.0})
    log.log_images(1, {"x": torch.zeros(1, 1, 4, 4)})
    log.log_metrics(1, 1, {"MAE": 1.0})
    assert log.write_plots(tmp_path / "web") == []
    log.close()
    assert not (tmp_path / "ckpt").exists() and not (tmp_path / "web").exists()


def test_wandb_missing_is_a_user_error(tmp_path, monkeypatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_wandb(name, *args, **kwargs):
        if name == "wandb":
            raise ImportError("no wandb")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_wandb)
    with pytest.raises(UserError, match="revgan\\[wandb\\]"):
        RunLogger(tmp_path, "run", use_tensorboard=False, use_wandb=True)


def test_format_loss_line() -> None:
    line = format_loss_line(3, 40, {"G_A": 1.23456, "cycle_A": 0.0004})
    assert line == "(epoch: 3, iters: 40, time: 0.000, data: 0.000) G_A: 1.235 cycle_A: 0.000"
