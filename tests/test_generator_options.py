"""Generator options for translation quality: ``--upsample`` (decoder x2 layers: transpose,
the reference, or resize, no checkerboard) and ``--core_init`` (RevGAN core F/G init)."""

from __future__ import annotations

import pytest
import torch

from revgan.errors import UserError
from revgan.networks import layers
from revgan.networks.generators import define_G
from revgan.networks.reversible_generators import define_rev_G


def _checker(x: torch.Tensor) -> float:
    """Mean |response| of the 2-D checkerboard filter over the last two axes."""
    r = x[..., :-1, :-1] - x[..., :-1, 1:] - x[..., 1:, :-1] + x[..., 1:, 1:]
    return float(r.abs().mean())


@pytest.mark.parametrize("dims", [2, 3])
def test_resize_conv_is_nearest_pad_conv_without_the_large_input(dims):
    """The sub-pixel form equals the three layers run in turn, values and gradients, with
    odd sizes and a bias, and saves less for backward than the x2 input alone."""
    torch.manual_seed(0)
    fused = layers.upsample_x2(dims, 5, 3, "resize", bias=True)
    x = torch.randn((2, 5) + (5, 4, 3)[:dims], requires_grad=True)
    outs, grads = [], []
    for net in (fused, torch.nn.Sequential(*fused)):
        y = net(x)
        outs.append(y)
        grads.append(torch.autograd.grad((y * y.detach().cos()).sum(),
                                         [x, fused[2].weight, fused[2].bias]))
    # float sums in another order: compare each tensor against its own norm (any x86 CPU)
    for a, b in [tuple(outs), *zip(*grads)]:
        assert float((a - b).norm() / b.norm()) < 1e-5
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t,
                                                  lambda t: t):
        fused(x)
    assert max(saved) < x.numel() * 2**dims


@pytest.mark.parametrize("dims", [2, 3])
def test_resize_upsampling_has_no_checkerboard(dims):
    torch.manual_seed(0)
    flat = torch.ones((1, 4) + (6,) * dims)  # a constant feature map
    up = {m: layers.upsample_x2(dims, 4, 2, m, bias=False) for m in layers.UPSAMPLES}
    outs = {m: net(flat) for m, net in up.items()}
    assert all(o.shape == (1, 2) + (12,) * dims for o in outs.values())
    inner = (..., *(slice(2, -2),) * dims)  # away from the padded border
    # a stride-2 3-wide transposed conv covers even and odd outputs with different taps
    assert _checker(outs["transpose"][inner]) > 1e-3
    assert _checker(outs["resize"][inner]) < 1e-6
    with pytest.raises(UserError, match="upsampling"):
        layers.upsample_x2(dims, 4, 2, "bilinear", bias=False)


def test_generators_take_the_upsampling_option():
    x = torch.randn(1, 3, 16, 16)
    for up in layers.UPSAMPLES:
        G = define_rev_G("resnet_2blocks", 3, 3, ngf=4, upsample=up)
        kinds = {type(m).__name__ for m in G.decoder_B.modules()}
        assert ("ConvTranspose2d" in kinds) == (up == "transpose")
        assert ("Upsample" in kinds) == (up == "resize")
        assert G(x, "AtoB").shape == G(x, "BtoA").shape == x.shape
        # the reversible core is untouched: its inverse undoes it (up to the 2**-16 snap)
        h = G.encode(x, "A")
        torch.testing.assert_close(G.core.inverse(G.core(h)), h, atol=2**-16, rtol=0)
        R = define_G("resnet_2blocks", 3, 3, ngf=4, upsample=up)
        assert ("Upsample" in {type(m).__name__ for m in R.modules()}) == (up == "resize")
        assert R(x).shape == x.shape
    with pytest.raises(UserError, match="fully_reversible"):
        define_rev_G("resnet_2blocks", 3, 3, ngf=4, fully_reversible=True, upsample="resize")


def _core_grad_norm(G) -> float:
    torch.manual_seed(1)
    x, y = torch.randn(1, 3, 16, 16), torch.randn(1, 3, 16, 16)
    (G(x, "AtoB") - y).abs().mean().backward()
    return float(torch.sqrt(sum((p.grad**2).sum() for p in G.core.parameters())))


def test_core_init():
    x = torch.randn(1, 3, 16, 16)
    torch.manual_seed(0)
    zero = define_rev_G("resnet_2blocks", 3, 3, ngf=4)
    torch.manual_seed(0)
    normal = define_rev_G("resnet_2blocks", 3, 3, ngf=4, zero_init=False)
    h = zero.encode(x, "A")
    torch.testing.assert_close(zero.core(h), h, atol=2**-16, rtol=0)  # identity at init
    assert (normal.core(h) - h).abs().max() > 0.1
    # F/G end in an instance norm: after a zero conv it divides by sqrt(eps), so the first
    # gradients of the core are hundreds of times larger than with a normal init
    assert _core_grad_norm(zero) > 20 * _core_grad_norm(normal)
    from revgan.models.base import build_generator
    from revgan.models.registry import build_config

    cfg = build_config("paired_revgan", is_train=False,
                       values={"dataroot": ".", "netG": "resnet_2blocks", "ngf": 4,
                               "core_init": "normal", "upsample": "resize"})
    G = build_generator(cfg, "rev")
    assert "Upsample" in {type(m).__name__ for m in G.modules()}
    h = G.encode(x, "A")
    assert (G.core(h) - h).abs().max() > 0.1
