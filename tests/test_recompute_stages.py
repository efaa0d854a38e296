"""--recompute_stages: encoders/decoders re-run in backward change memory, never gradients."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import assert_grads_equal

from revgan.engine.recompute import RecomputedSequential, set_recompute
from revgan.errors import UserError
from revgan.models import build_config, create_model
from revgan.networks import define_G, define_rev_G


def network(kind: str, dims: int, norm: str):
    torch.manual_seed(0)
    if kind == "revgan":
        net = define_rev_G("resnet_2blocks", 2, 2, ngf=4, norm=norm, dims=dims,
                           use_dropout=True)
    else:
        net = define_G("resnet_2blocks", 2, 2, ngf=4, norm=norm, use_dropout=True, dims=dims)
    for p in net.parameters():  # away from the identity (zero-initialised core convs)
        if p.ndim > 2:
            torch.nn.init.normal_(p, 0.0, 0.2)
    return net


def step(net, recompute: bool, dims: int, direction: str):
    """Output, input + parameter gradients, buffers, and the bytes autograd kept."""
    net = copy.deepcopy(net).train()
    assert set_recompute(net, recompute) > 0
    side = 8 if dims == 3 else 16
    x = torch.rand(2, 2, *(side,) * dims, generator=torch.Generator().manual_seed(1)) * 2 - 1
    x.requires_grad_(True)
    kept = []

    def pack(t):
        kept.append(t.untyped_storage().nbytes())
        return t

    torch.manual_seed(5)  # dropout masks
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = net(x, direction) if hasattr(net, "core") else net(x)
    (y * torch.cos(3 * x)).sum().backward()
    params = [x.grad] + [p.grad for p in net.parameters()]
    return y.detach(), params, [b.clone() for b in net.buffers()], sum(kept)


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("kind,norm", [("revgan", "instance"), ("revgan", "batch"),
                                       ("resnet", "instance"), ("resnet", "batch")])
def test_recomputed_stages_give_the_same_gradients(kind, norm, dims):
    net = network(kind, dims, norm)
    for direction in ("AtoB", "BtoA") if kind == "revgan" else ("AtoB",):
        out, grads, buffers, kept = step(net, True, dims, direction)
        out_ref, grads_ref, buffers_ref, kept_ref = step(net, False, dims, direction)
        assert torch.equal(out, out_ref)
        assert_grads_equal(grads, grads_ref, exact=True)
        # running statistics updated once, not again by the re-run
        assert all(torch.equal(a, b) for a, b in zip(buffers, buffers_ref))
        assert kept < 0.5 * kept_ref, (kept, kept_ref)


def test_stages_of_the_resnet_generator_and_plain_mode():
    net = define_G("resnet_3blocks", 3, 3, ngf=4)
    assert isinstance(net.model, RecomputedSequential)
    head = 10  # pad, conv, norm, relu, then 2 x [conv, norm, relu]
    assert net.model.stage_bounds == [(0, head), (head, head + 1), (head + 1, head + 2),
                                      (head + 2, head + 3), (head + 3, len(net.model))]
    set_recompute(net, True)
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():  # no graph: a plain Sequential
        assert torch.equal(net(x), net.model[:](x))
    keys = set(define_G("resnet_3blocks", 3, 3, ngf=4).state_dict())
    assert set(net.state_dict()) == keys


def test_option_reaches_the_generator_and_refuses_a_unet():
    opt = build_config("paired_revgan", True, {"ngf": 4, "netG": "resnet_2blocks",
                                               "recompute_stages": "on", "gpu_ids": "-1"})
    G = create_model(opt, torch.device("cpu")).nets["G"]
    stages = [m for m in G.modules() if isinstance(m, RecomputedSequential)]
    assert len(stages) == 4 and all(m.recompute for m in stages)
    opt = build_config("pix2pix", True, {"ngf": 4, "recompute_stages": "on", "gpu_ids": "-1"})
    with pytest.raises(UserError, match="no stages"):
        create_model(opt, torch.device("cpu"))
