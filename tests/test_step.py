"""The training step: grouped backward gives the gradients of one summed backward."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import assert_grads_equal

from revgan.cli.options import parse_options
from revgan.models import create_model

CASES = [
    ("unpaired_revgan", ["--netG", "resnet_2blocks", "--lambda_identity", "0.5"]),
    ("unpaired_revgan", ["--netG", "resnet_2blocks", "--fully_reversible"]),
    ("cycle_gan", ["--netG", "resnet_2blocks", "--lambda_identity", "0.5"]),
    ("paired_revgan", ["--netG", "resnet_2blocks"]),
    ("pix2pix", ["--netG", "unet_32"]),  # batch norm and dropout: same draws, same statistics
    ("unpaired_revgan3d", ["--netG", "edsrF_2", "--patch_size", "16", "--n_layers_D", "2"]),
]


def build(model: str, flags: list[str], tmp_path):
    argv = ["--dataroot", str(tmp_path), "--name", "s", "--checkpoints_dir", str(tmp_path),
            "--model", model, "--ngf", "4", "--ndf", "4", "--gpu_ids", "-1", *flags]
    torch.manual_seed(0)
    return create_model(parse_options(argv, is_train=True), torch.device("cpu"))


def batch(model) -> dict:
    opt = model.opt
    size = (16,) * 3 if opt.dims == 3 else (32, 32)
    generator = torch.Generator().manual_seed(1)
    a = torch.rand(2, opt.input_nc, *size, generator=generator) * 2 - 1
    b = torch.rand(2, opt.output_nc, *size, generator=generator) * 2 - 1
    return {"A": a, "B": b, "A_paths": ["a0", "a1"]}


def step_gradients(model, grouped: bool) -> dict[str, torch.Tensor]:
    model.grouped_backward = grouped
    model.set_input(batch(model))
    torch.manual_seed(2)
    model.optimize()
    assert not model._step_skipped
    return {f"{net_name}.{name}": p.grad.clone() for net_name, net in model.nets.items()
            for name, p in net.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("model_name,flags", CASES, ids=[
    "unpaired_revgan", "unpaired_fully_rev", "cycle_gan", "paired_revgan", "pix2pix",
    "unpaired_revgan3d"])
def test_grouped_backward_equals_summed_backward(model_name, flags, tmp_path):
    model = build(model_name, flags, tmp_path)
    twin = copy.deepcopy(model)
    summed = step_gradients(model, grouped=False)
    grouped = step_gradients(twin, grouped=True)
    assert summed.keys() == grouped.keys()
    # every generator parameter got a gradient (the groups together cover the objective)
    assert {k for k in summed if k.startswith("G.")} == {
        f"G.{n}" for n, p in model.nets["G"].named_parameters() if p.requires_grad}
    keys = sorted(summed)
    assert_grads_equal([grouped[k] for k in keys], [summed[k] for k in keys])
    assert model.losses == pytest.approx(twin.losses, rel=1e-6, abs=1e-9)


def test_grouped_backward_lowers_the_step_peak(tmp_path, require):
    """The grouped step holds one group's graph at a time: its peak heap is lower."""
    from revgan.engine.memory import has_heap_counter, peak_memory

    require(has_heap_counter(), "needs glibc's mallinfo2 to measure the heap")
    model = build("cycle_gan", ["--netG", "resnet_2blocks", "--lambda_identity", "0.5",
                                "--ngf", "8"], tmp_path)
    peaks = {}
    for grouped in (False, True, False, True):
        model.grouped_backward = grouped
        model.set_input(batch(model))
        peak, _ = peak_memory(model.optimize, torch.device("cpu"))
        peaks[grouped] = min(peaks.get(grouped, peak), peak)
    assert peaks[True] < 0.8 * peaks[False], peaks


def test_nonfinite_group_skips_the_step_but_keeps_the_fakes(tmp_path):
    model = build("unpaired_revgan", ["--netG", "resnet_2blocks"], tmp_path)
    model.grouped_backward = True
    data = batch(model)
    data["B"][0, 0, 0, 0] = float("nan")
    model.set_input(data)
    before = {k: v.clone() for k, v in model.nets["G"].state_dict().items()}
    model.optimize()
    assert model._step_skipped and model.nonfinite_total == 1
    assert all(torch.equal(before[k], v) for k, v in model.nets["G"].state_dict().items())
    assert model.fake_A.shape == data["A"].shape


def test_grouped_backward_option():
    """auto: on for the RevGAN models, off for the upstream baselines; on/off force it."""
    def grouped(model: str, *flags: str) -> bool:
        return build(model, ["--netG", "resnet_2blocks", *flags], ".").grouped_backward

    assert grouped("unpaired_revgan") and grouped("paired_revgan")
    assert not grouped("cycle_gan") and not grouped("unpaired_revgan", "--grouped_backward", "off")
    assert grouped("cycle_gan", "--grouped_backward", "on")
