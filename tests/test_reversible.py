"""The reversible engine: exact inverses, gradients equal to plain autograd, flat memory."""

from __future__ import annotations

import copy
import gc

import pytest
import torch
from helpers import assert_grads_equal
from torch import nn

from revgan.engine.memory import has_heap_counter, heap_bytes
from revgan.engine.reversible import (
    AdditiveCoupling,
    AffineCoupling,
    ChannelPermutation,
    Inverted,
    Invertible1x1Conv,
    ReversibleSequence,
    Squeeze,
)
from revgan.networks.layers import conv, norm_layer, reflection_pad


def branch(channels: int, dims: int, out_factor: int = 1, std: float = 0.05,
           norm: str = "instance", dropout: float = 0.0) -> nn.Sequential:
    """The reference's F/G (pad, conv, norm, ReLU, pad, conv, norm), randomly initialised so
    that the block is far from the identity."""
    layers = [reflection_pad(dims, 1), conv(dims, channels, channels, 3), norm_layer(dims, norm)(
        channels), nn.ReLU()]
    if dropout:
        layers.append(nn.Dropout(dropout))
    layers += [reflection_pad(dims, 1), conv(dims, channels, channels * out_factor, 3)]
    if out_factor == 1:
        layers.append(norm_layer(dims, norm)(channels))
    net = nn.Sequential(*layers)
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d)):
            nn.init.normal_(m.weight, 0.0, std)
            nn.init.normal_(m.bias, 0.0, std)
    return net


def stack(depth: int, channels: int, dims: int, coupling: str = "additive",
          **kwargs) -> ReversibleSequence:
    half = channels // 2
    if coupling == "additive":
        blocks = [AdditiveCoupling(branch(half, dims, **kwargs), branch(half, dims, **kwargs))
                  for _ in range(depth)]
    else:
        blocks = [AffineCoupling(branch(half, dims, 2, **kwargs), branch(half, dims, 2, **kwargs))
                  for _ in range(depth)]
    return ReversibleSequence(blocks)


def shape(dims: int, channels: int, size: int, batch: int = 2) -> tuple[int, ...]:
    return (batch, channels) + (size,) * dims


@pytest.mark.parametrize("dims", [2, 3])
def test_additive_round_trip_depth32(dims):
    torch.manual_seed(0)
    size = 16 if dims == 2 else 6
    core = stack(32, 32, dims)
    x = torch.relu(torch.randn(shape(dims, 32, size))) * 3
    with torch.no_grad():
        y = core(x)
        error = (core.inverse(y) - x).abs().max().item()
    assert (y - x).abs().max() > 1.0, "the stack must not be near the identity"
    assert error <= 1e-5


@pytest.mark.parametrize("dims", [2, 3])
def test_float_additive_round_trip_degrades_but_fixed_point_is_exact(dims):
    torch.manual_seed(0)
    size = 16 if dims == 2 else 6
    core = stack(32, 32, dims)
    x = torch.randn(shape(dims, 32, size))
    with torch.no_grad():
        snapped = core.blocks[0]._snap(x, x.dtype)
        assert torch.equal(core.inverse(core(snapped)), snapped)  # bit for bit
        for block in core.blocks:
            block.fixed_point_bits = None
        float_error = (core.inverse(core(x)) - x).abs().max().item()
    assert 0 < float_error < 1e-3


@pytest.mark.parametrize("dims", [2, 3])
def test_affine_bounded_round_trip_depth32(dims):
    torch.manual_seed(0)
    size = 16 if dims == 2 else 6
    core = stack(32, 32, dims, coupling="affine", std=0.02)  # the default N(0, 0.02) init
    x = torch.randn(shape(dims, 32, size))
    with torch.no_grad():
        y = core(x)
        error = (core.inverse(y) - x).abs().max().item()
    assert torch.isfinite(y).all()
    assert (y - x).abs().max() > 1.0
    assert error <= 1e-4


def _grads(core: ReversibleSequence, x0: torch.Tensor, memory_saving: bool, reverse: bool):
    core.memory_saving = memory_saving
    core.zero_grad(set_to_none=True)
    x = x0.clone().requires_grad_(True)
    h = torch.relu(x)  # an op right before the core that saves its output
    y = core.inverse(h) if reverse else core(h)
    loss = (y * torch.sin(h)).sum() + (y**2).mean()  # the core's input is used again after
    loss.backward()
    return [x.grad] + [p.grad for p in core.parameters()]


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("coupling", ["additive", "affine"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "inverse"])
def test_gradients_match_plain_autograd(dims, coupling, reverse):
    torch.manual_seed(1)
    size = 8 if dims == 2 else 5
    # far from the identity; affine scales multiply, so its weights stay nearer the default
    core = stack(5, 8, dims, coupling=coupling, std=0.2 if coupling == "additive" else 0.05)
    x0 = torch.randn(shape(dims, 8, size))
    saving = _grads(core, x0, True, reverse)
    plain = _grads(core, x0, False, reverse)
    assert all(g is not None for g in saving)
    # Additive couplings run on a fixed-point grid, so the rebuilt activations are the
    # originals bit for bit and the gradients equal plain autograd exactly (as the README
    # says). Affine couplings multiply and divide in float: equal up to round-off only.
    assert_grads_equal(saving, plain, exact=coupling == "additive")


def test_gradients_with_autograd_grad_and_input_without_grad():
    torch.manual_seed(2)
    core = stack(4, 8, 2)
    x = torch.randn(shape(2, 8, 8))
    results = []
    for saving in (True, False):
        core.memory_saving = saving
        y = core(x)  # the input does not require grad; the parameters do
        results.append(torch.autograd.grad(y.pow(2).sum(), list(core.parameters())))
    assert_grads_equal(*results, exact=True)


def test_no_grad_and_inference_mode_build_no_graph():
    core = stack(3, 8, 2)
    x = torch.randn(shape(2, 8, 8), requires_grad=True)
    with torch.no_grad():
        assert core(x).grad_fn is None
    with torch.inference_mode():
        y = core(x)
        assert y.grad_fn is None and torch.is_inference(y)


def test_input_tensor_is_never_modified():
    core = stack(4, 8, 2)
    x = torch.randn(shape(2, 8, 8), requires_grad=True)
    h = torch.relu(x)
    before, version = h.detach().clone(), h._version
    core(h).sum().backward()
    assert h._version == version
    assert torch.equal(h.detach(), before)


def test_training_step_gradients_and_sgd_update_equal_plain_autograd():
    """Gradients compared directly (Adam would hide a constant factor on the gradient), then
    one plain SGD step, whose update is the gradient itself."""
    torch.manual_seed(3)
    saving = stack(6, 8, 2, std=0.2)
    plain = copy.deepcopy(saving)
    plain.memory_saving = False
    x = torch.randn(shape(2, 8, 8))
    grads = []
    for core in (saving, plain):
        opt = torch.optim.SGD(core.parameters(), lr=0.1)
        h = torch.relu(x.clone().requires_grad_(True))
        (core(h) - h).abs().mean().backward()
        grads.append([p.grad.clone() for p in core.parameters()])
        opt.step()
    assert_grads_equal(*grads, exact=True)  # additive couplings: exact (see above)
    for p, q in zip(saving.parameters(), plain.parameters()):
        assert torch.equal(p, q)


def test_gradient_check_catches_a_scaled_gradient_and_a_wrong_small_tensor():
    """The comparison itself: a doubled or halved gradient, or one small tensor (a 1x1
    mixing matrix beside large conv weights) entirely wrong, must not pass."""
    gen = torch.Generator().manual_seed(0)
    big = [torch.randn(64, 64, 3, 3, generator=gen) for _ in range(3)]
    small = torch.randn(1, 1, generator=gen) * 1e-3  # ~1e-6 of the total norm
    reference = [*big, small]
    assert_grads_equal([t.clone() for t in reference], reference)
    for factor in (2.0, 0.5):
        with pytest.raises(AssertionError):
            assert_grads_equal([t * factor for t in reference], reference)
    with pytest.raises(AssertionError, match=r"tensor 3 \(1, 1\)"):
        assert_grads_equal([*big, -small], reference)
    with pytest.raises(AssertionError, match="bit-identical"):
        assert_grads_equal([*big, torch.nextafter(small, small + 1)], reference, exact=True)


def test_dropout_masks_are_replayed():
    torch.manual_seed(4)
    core = stack(3, 8, 2, dropout=0.5)
    x0 = torch.randn(shape(2, 8, 8))
    torch.manual_seed(10)
    saving = _grads(core, x0, True, False)
    torch.manual_seed(10)
    plain = _grads(core, x0, False, False)
    assert_grads_equal(saving, plain, exact=True)


@pytest.mark.parametrize("dims", [2, 3])
def test_batch_norm_statistics_updated_once(dims):
    torch.manual_seed(5)
    saving = stack(3, 8, dims, norm="batch")
    plain = copy.deepcopy(saving)
    plain.memory_saving = False
    x = torch.randn(shape(dims, 8, 8 if dims == 2 else 5), requires_grad=True)
    for core in (saving, plain):
        core(x).sum().backward()
    expected = nn.BatchNorm2d if dims == 2 else nn.BatchNorm3d
    pairs = [(m1, m2) for m1, m2 in zip(saving.modules(), plain.modules())
             if isinstance(m1, nn.modules.batchnorm._BatchNorm)]
    assert len(pairs) == 3 * 2 * 2 and all(type(m1) is expected for m1, _ in pairs)
    for m1, m2 in pairs:
        assert (m1.running_mean != 0).any()  # the statistics were updated
        torch.testing.assert_close(m1.running_mean, m2.running_mean)
        torch.testing.assert_close(m1.running_var, m2.running_var)
        assert m1.num_batches_tracked.item() == m2.num_batches_tracked.item() == 1


@pytest.mark.parametrize("dims", [2, 3])
def test_permutation_1x1conv_squeeze_inverted_round_trip(dims):
    torch.manual_seed(6)
    x = torch.randn(shape(dims, 4, 8))
    squeeze = Squeeze(dims)
    assert squeeze(x).shape == (2, 4 * 2**dims) + (4,) * dims
    blocks = [squeeze, Invertible1x1Conv(4 * 2**dims), ChannelPermutation(4 * 2**dims),
              Inverted(Squeeze(dims))]
    seq = ReversibleSequence(blocks)
    with torch.no_grad():
        y = seq(x)
        assert y.shape == x.shape and not torch.allclose(y, x)
        torch.testing.assert_close(seq.inverse(y), x, rtol=0, atol=1e-5)
    # the learned mixing gets correct gradients through the memory-saving path
    grads = []
    for saving in (True, False):
        seq.memory_saving = saving
        seq.zero_grad(set_to_none=True)
        (seq(x) ** 2).sum().backward()
        grads.append([seq.blocks[1].weight.grad.clone()])
    assert grads[0][0].abs().max() > 0
    # the inverse 1x1 convolution rebuilds its input through a float matrix inverse: round-off
    assert_grads_equal(*grads)


HEAP_COUNTER_HINT = "needs glibc >= 2.33 for mallinfo2 (Linux): run it on a glibc system"


def _held_after_forward(core: ReversibleSequence, x: torch.Tensor) -> int:
    """Heap bytes held between the end of the forward pass and the backward pass."""
    gc.collect()
    before = heap_bytes()
    y = core(torch.relu(x))
    held = heap_bytes() - before
    y.sum().backward()
    return held


def test_activation_memory_is_flat_in_depth(require):
    require(has_heap_counter(), HEAP_COUNTER_HINT)
    torch.manual_seed(7)
    x = torch.randn(1, 32, 48, 48, requires_grad=True)
    held = {}
    for saving in (True, False):
        for depth in (4, 32):
            core = stack(depth, 32, 2)
            core.memory_saving = saving
            _held_after_forward(core, x)  # warm-up: first-call allocations are not activations
            held[saving, depth] = min(_held_after_forward(core, x) for _ in range(2))
    tensor_bytes = x.numel() * 4
    # reversible: the ReLU output and the stack output, whatever the depth
    assert held[True, 32] <= 1.1 * held[True, 4]
    assert held[True, 32] < 3 * tensor_bytes
    # plain autograd keeps every block's activations
    assert held[False, 32] > 5 * held[False, 4]
    assert held[False, 32] > 30 * tensor_bytes
