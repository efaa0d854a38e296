"""``--residual``: a global skip, output = input + correction, for every generator kind."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import cli_error, onnx_output, pytorch_output, random_input
from test_api import make_run

import revgan
from revgan.cli.main import main
from revgan.errors import UserError
from revgan.networks.generators import define_G
from revgan.networks.reversible_generators import define_rev_G

# (builder, 2D size, 3D size): each generator's smallest comfortable input
KINDS = {
    "resnet": (lambda dims, res: define_G("resnet_1blocks", 1, 1, ngf=2, dims=dims,
                                          residual=res), 8, 8),
    "unet": (lambda dims, res: define_G("unet_16", 1, 1, ngf=2, dims=dims, residual=res), 16, 16),
    "rev": (lambda dims, res: define_rev_G("resnet_2blocks", 1, 1, ngf=4, dims=dims,
                                           residual=res), 8, 8),
}


def _directions(G) -> tuple[str, ...]:
    return ("AtoB", "BtoA") if hasattr(G, "core") else ("AtoB",)


def _run(G, x, direction):
    return G(x, direction) if hasattr(G, "core") else G(x)


def _last_conv(G, direction: str) -> torch.nn.Module:
    """The convolution that produces the correction in ``direction``."""
    part = (G.decoder_B if direction == "AtoB" else G.decoder_A) if hasattr(G, "core") else G
    convs = [m for m in part.modules() if isinstance(m, torch.nn.modules.conv._ConvNd)]
    return convs[-1]


def _with_last_conv_output(G, x, direction):
    """G's output and what the convolution producing its correction gave on the way."""
    seen = []
    handle = _last_conv(G, direction).register_forward_hook(lambda m, i, o: seen.append(o))
    try:
        out = _run(G, x, direction)
    finally:
        handle.remove()
    return out, seen[-1]


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("kind", list(KINDS))
def test_residual_output_is_input_plus_a_linear_correction(kind, dims):
    build, size2, size3 = KINDS[kind]
    torch.manual_seed(0)
    residual = build(dims, True).eval()
    plain = build(dims, False).eval()
    x = random_input((1, 1) + ((size2,) * 2 if dims == 2 else (size3,) * 3))
    with torch.no_grad():
        for direction in _directions(residual):  # at init: the identity (a zero correction)
            assert torch.equal(_run(residual, x, direction), x), direction
        for p in residual.parameters():  # non-trivial weights everywhere
            p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel()))
                    * 0.3)
    # the option adds no parameter: the same keys, so the plain weights load as they are
    assert residual.state_dict().keys() == plain.state_dict().keys()
    plain.load_state_dict(residual.state_dict())
    with torch.no_grad():
        for direction in _directions(residual):
            out, correction = _with_last_conv_output(residual, x, direction)
            plain_out, plain_last = _with_last_conv_output(plain, x, direction)
            assert correction.abs().max() > 1.5  # large enough that a tanh would show
            assert torch.equal(correction, plain_last)  # the same network up to there
            # residual: input + the raw correction (no tanh); plain: tanh of it
            assert torch.equal(out, x + correction), direction
            assert torch.equal(plain_out, torch.tanh(plain_last)), direction
            # a zero correction (the last conv zeroed): G is the identity
            silent = copy.deepcopy(residual)
            conv = _last_conv(silent, direction)
            conv.weight.zero_()
            if conv.bias is not None:
                conv.bias.zero_()
            assert torch.equal(_run(silent, x, direction), x), direction


def test_residual_rev_core_stays_exactly_invertible():
    G = define_rev_G("resnet_2blocks", 3, 3, ngf=4, residual=True)
    h = G.encode(random_input((1, 3, 16, 16)), "A")
    torch.testing.assert_close(G.core.inverse(G.core(h)), h, atol=2**-16, rtol=0)


def test_residual_refusals_are_one_line(tmp_path, capsys):
    for build in (lambda: define_G("resnet_1blocks", 3, 1, ngf=2, residual=True),
                  lambda: define_G("unet_16", 3, 1, ngf=2, residual=True),
                  lambda: define_rev_G("resnet_1blocks", 3, 1, ngf=4, residual=True)):
        with pytest.raises(UserError, match="as many input as output channels"):
            build()
    with pytest.raises(UserError, match="fully_reversible"):
        define_rev_G("resnet_1blocks", 3, 3, ngf=4, residual=True, fully_reversible=True)
    line = cli_error(capsys, "train", "--dataroot", tmp_path, "--model", "pix2pix",
                     "--residual", "--output_nc", "1", "--gpu_ids", "-1")
    assert "--residual" in line and "(got 3 and 1)" in line


@pytest.mark.parametrize("model, dims", [("paired_revgan", 2), ("paired_revgan3d", 3),
                                         ("pix2pix3d", 3)])
def test_saved_run_keeps_residual_through_load_translate_and_export(tmp_path, model, dims):
    values = dict(residual=True, netG="unet_16" if model.startswith("pix2pix") else
                  "resnet_1blocks")
    if dims == 3:
        values.update(patch_size=(16, 16, 16), intensity="none")
    G = make_run(tmp_path / "run", model=model, **values)
    t = revgan.load(tmp_path / "run")
    assert t.config.residual and t._G is not None
    shape = (1, 1, 16, 16, 16) if dims == 3 else (1, 3, 32, 32)
    x = random_input(shape, seed=7)
    for direction in t.directions:
        expected = G(x, direction)
        torch.testing.assert_close(pytorch_output(tmp_path / "run", x, direction), expected)
        # export (ONNX) carries the skip
        main(["export", "--model_dir", str(tmp_path / "run"), "--direction",
                              direction, "--format", "onnx"])
        got = onnx_output(tmp_path / "run" / "export" / f"G_{direction}.onnx", x)
        assert (got - expected).abs().max() <= 1e-4, direction
    # sliding windows over an input larger than the window: with a zero correction the
    # blended translation is the input itself (blend weights sum to one)
    direction = t.directions[-1]
    last = _last_conv(getattr(t._G, "G", t._G), direction)
    with torch.no_grad():
        last.weight.zero_()
        if last.bias is not None:
            last.bias.zero_()
    big = random_input((1, 24, 40, 20) if dims == 3 else (3, 45, 70), seed=9)
    out = t.translate(big, direction=direction)
    assert out.shape == big.shape
    torch.testing.assert_close(torch.as_tensor(out).float(), big, atol=1e-5, rtol=0)
