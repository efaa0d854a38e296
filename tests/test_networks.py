"""Tests for revgan.networks: parameter counts, shapes, identity at init, exact inversion."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import assert_grads_equal
from torch import nn

from revgan.engine.reversible import Invertible1x1Conv
from revgan.errors import UserError
from revgan.networks import (
    FullyReversibleGenerator,
    RevGenerator,
    count_parameters,
    define_D,
    define_G,
    define_rev_G,
    init_weights,
)


def randomize(net: nn.Module, std: float = 0.05, seed: int = 0) -> nn.Module:
    """Give every conv weight and bias random non-zero values (undoing zero init)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.modules.conv._ConvNd):
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * std)
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * std)
    return net


def rand(*shape: int, seed: int = 1) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1


# --------------------------------------------------------------------------- parameter counts


@pytest.mark.parametrize("measured, expected", [
    (lambda: define_G("resnet_9blocks", 3, 3), 11.378e6),
    (lambda: define_rev_G("resnet_9blocks", 3, 3), 6.83e6),
    (lambda: define_rev_G("resnet_9blocks", 3, 3).core, 5.31e6),
    (lambda: define_D("basic", 3), 2.77e6),
])
def test_parameter_counts_match_reference(measured, expected):
    count = count_parameters(measured())
    assert abs(count - expected) / expected < 0.02, count


def test_parameter_counts_exact():
    # The reference layer lists (ngf=64, instance norm, 3 <-> 3 channels) minus the biases
    # right before a norm, which the norm cancels (see layers.uses_bias).
    assert count_parameters(define_G("resnet_9blocks", 3, 3)) == 11_372_931
    rev = define_rev_G("resnet_9blocks", 3, 3)
    assert count_parameters(rev) == 6_820_614
    assert count_parameters(rev.core) == 5_308_416
    assert count_parameters(rev.encoder_A) == 378_048
    assert count_parameters(define_D("basic", 3)) == 2_763_841


# --------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("name, size", [
    ("resnet_9blocks", 32), ("resnet_2blocks", 16), ("unet_32", 32), ("unet_128", 128),
    ("unet_256", 256)])
@pytest.mark.parametrize("nc_in, nc_out", [(3, 3), (1, 3), (1, 1)])
def test_baseline_generator_shapes_2d(name, size, nc_in, nc_out):
    net = define_G(name, nc_in, nc_out, ngf=4, norm="instance", use_dropout=True, dims=2)
    out = net(rand(1, nc_in, size, size))
    assert out.shape == (1, nc_out, size, size)
    assert out.abs().max() <= 1


@pytest.mark.parametrize("name", ["resnet_2blocks", "unet_16", "unet_128", "unet_256"])
def test_baseline_generator_shapes_3d(name):
    net = define_G(name, 1, 2, ngf=4, norm="instance", use_dropout=False, dims=3)
    assert net(rand(1, 1, 16, 16, 16)).shape == (1, 2, 16, 16, 16)


def test_unet_depth_per_name():
    assert define_G("unet_256", 3, 3, ngf=2, dims=2).size_divisor == 256
    assert define_G("unet_128", 3, 3, ngf=2, dims=2).size_divisor == 128
    assert define_G("unet_128", 1, 1, ngf=2, dims=3).size_divisor == 16  # capped at 4 levels


@pytest.mark.parametrize("dims, size", [(2, 16), (3, 8)])
@pytest.mark.parametrize("name", ["resnet_2blocks", "edsrF_2"])
@pytest.mark.parametrize("fully", [False, True])
@pytest.mark.parametrize("coupling", ["additive", "affine"])
@pytest.mark.parametrize("nc_A, nc_B", [(3, 3), (1, 3), (1, 1)])
def test_reversible_generator_shapes(dims, size, name, fully, coupling, nc_A, nc_B):
    net = define_rev_G(name, nc_A, nc_B, ngf=4, dims=dims, coupling=coupling,
                       fully_reversible=fully)
    spatial = (size,) * dims
    assert net(rand(2, nc_A, *spatial), "AtoB").shape == (2, nc_B, *spatial)
    assert net(rand(2, nc_B, *spatial), "BtoA").shape == (2, nc_A, *spatial)


@pytest.mark.parametrize("name", ["basic", "n_layers", "pixel"])
@pytest.mark.parametrize("dims, size", [(2, 64), (3, 16)])
@pytest.mark.parametrize("nc", [1, 3, 4])
def test_discriminator_shapes(name, dims, size, nc):
    net = define_D(name, nc, ndf=4, n_layers_D=2, dims=dims)
    out = net(rand(1, nc, *(size,) * dims))
    assert out.shape[:2] == (1, 1) and out.ndim == dims + 2
    if name == "pixel":
        assert out.shape[2:] == (size,) * dims
    if name == "basic" and dims == 2:
        assert out.shape[2:] == (6, 6)  # 70x70 PatchGAN on 64x64: 64->32->16->8->7->6


def test_discriminator_basic_depth():
    # 2D basic = 3 layers (2.76 M at ndf 64); 3D basic = 2 layers, as in the reference's 3D code.
    assert count_parameters(define_D("n_layers", 3, n_layers_D=3)) == 2_763_841
    assert count_parameters(define_D("basic", 1, ndf=4, dims=3)) == count_parameters(
        define_D("n_layers", 1, ndf=4, n_layers_D=2, dims=3))


# --------------------------------------------------------------------------- RevGAN generator


@pytest.mark.parametrize("style, norm", [("resnet", "instance"), ("resnet", "batch"),
                                         ("edsr", "instance")])
@pytest.mark.parametrize("dims", [2, 3])
def test_rev_core_is_identity_at_init(style, norm, dims):
    gen = RevGenerator(3, 3, ngf=4, n_blocks=3, n_downsampling=1, norm=norm, dims=dims,
                       style=style)
    init_weights(gen, "normal", 0.02)  # must not undo the zero init
    h = rand(2, 8, *(6,) * dims) * 3
    # Zero conv followed by instance/batch norm still outputs exactly zero ...
    for block in gen.core.blocks:
        assert not block.F(h[:, 4:]).any() and not block.G(h[:, :4]).any()
    # ... so the core is the identity (up to the engine's fixed-point grid, 2**-17).
    torch.testing.assert_close(gen.core(h), h, atol=1e-5, rtol=0)
    torch.testing.assert_close(gen.core.inverse(h), h, atol=1e-5, rtol=0)


def test_rev_core_not_identity_without_zero_init():
    gen = define_rev_G("resnet_2blocks", 3, 3, ngf=4)
    plain = RevGenerator(3, 3, ngf=4, n_blocks=2, zero_init=False)
    init_weights(plain)
    h = rand(1, 16, 8, 8)
    torch.testing.assert_close(gen.core(h), h, atol=1e-5, rtol=0)
    assert not torch.allclose(plain.core(h), h, atol=1e-3)


@pytest.mark.parametrize("style, dims", [("resnet", 2), ("edsr", 2), ("edsr", 3)])
@pytest.mark.parametrize("coupling", ["additive", "affine"])
def test_rev_core_inverts_with_random_weights(style, dims, coupling):
    gen = randomize(RevGenerator(2, 2, ngf=4, n_blocks=4, n_downsampling=1, dims=dims,
                                 coupling=coupling, style=style))
    h = rand(2, 8, *(8,) * dims)
    y = gen.core(h)
    assert (y - h).abs().max() > 0.1  # not the identity any more
    # Additive couplings are fixed-point (bit-exact after the first rounding to 2**-17);
    # affine ones are plain float arithmetic.
    tol = 1e-5 if coupling == "additive" else 1e-4
    torch.testing.assert_close(gen.core.inverse(y), h, atol=tol, rtol=0)


def test_rev_directions_use_core_and_its_inverse():
    gen = randomize(define_rev_G("resnet_3blocks", 3, 1, ngf=4, n_downsampling=1))
    a, b = rand(1, 3, 8, 8), rand(1, 1, 8, 8, seed=2)
    with torch.no_grad():
        ab = gen.decoder_B(gen.core(gen.encoder_A(a)))
        ba = gen.decoder_A(gen.core.inverse(gen.encoder_B(b)))
        ba_wrong = gen.decoder_A(gen.core(gen.encoder_B(b)))
        torch.testing.assert_close(gen(a, "AtoB"), ab)
        torch.testing.assert_close(gen(b, "BtoA"), ba)
        assert not torch.allclose(gen(b, "BtoA"), ba_wrong, atol=1e-4)


@pytest.mark.parametrize("direction", ["AtoB", "BtoA"])
def test_rev_generator_memory_saving_gradients(direction):
    gen = randomize(RevGenerator(1, 1, ngf=4, n_blocks=3, n_downsampling=1))
    x = rand(2, 1, 8, 8)
    target = rand(2, 1, 8, 8, seed=3)
    grads = []
    for saving in (True, False):
        gen.memory_saving = saving
        gen.zero_grad()
        ((gen(x, direction) - target) ** 2).sum().backward()
        grads.append([p.grad for p in gen.parameters()])
    assert len(grads[0]) > 10
    assert_grads_equal(*grads, exact=True)  # additive couplings on the fixed-point grid


def test_rev_generator_dropout_gradients_match():
    gen = randomize(RevGenerator(1, 1, ngf=4, n_blocks=2, n_downsampling=1, use_dropout=True,
                                 style="edsr"))
    gen.train()
    x = rand(2, 1, 8, 8)
    grads, outs = [], []
    for saving in (True, False):
        gen.memory_saving = saving
        gen.zero_grad()
        torch.manual_seed(7)  # same dropout masks in both runs
        out = gen(x, "BtoA")
        (out * x).sum().backward()
        outs.append(out.detach())
        grads.append([p.grad for p in gen.parameters()])
    torch.testing.assert_close(outs[0], outs[1])
    assert len(grads[0]) > 10
    assert_grads_equal(*grads, exact=True)


# --------------------------------------------------------------------------- fully reversible


@pytest.mark.parametrize("dims, size", [(2, 8), (3, 4)])
@pytest.mark.parametrize("coupling", ["additive", "affine"])
@pytest.mark.parametrize("nc", [1, 3])
@pytest.mark.parametrize("mixing", ["1x1conv", "permutation"])
def test_fully_reversible_round_trip(dims, size, coupling, nc, mixing):
    # Random N(0, 0.02) weights everywhere (the reference init, zero-init layers included).
    gen = randomize(FullyReversibleGenerator(nc, nc, ngf=4, n_blocks=3, n_downsampling=2,
                                             coupling=coupling, dims=dims, mixing=mixing),
                    std=0.02)
    x = rand(2, nc, *(size * 2,) * dims)
    with torch.no_grad():
        y = gen(x, "AtoB")
        assert (y - x).abs().max() > 0.5
        torch.testing.assert_close(gen(y, "BtoA"), x, atol=1e-4, rtol=0)
        torch.testing.assert_close(gen(gen(x, "BtoA"), "AtoB"), x, atol=1e-4, rtol=0)


def test_fully_reversible_permutation_mixing_is_bit_exact():
    gen = randomize(FullyReversibleGenerator(3, 3, ngf=4, n_blocks=4, n_downsampling=2,
                                             mixing="permutation"), std=0.1)
    x = rand(2, 3, 16, 16)
    with torch.no_grad():
        y = gen(x, "AtoB")
        assert (y - x).abs().max() > 1
        # Only the first rounding of the input to the 2**-16 grid is lost.
        assert (gen(y, "BtoA") - x).abs().max() <= 2.0**-17


def test_fully_reversible_is_identity_at_init():
    gen = define_rev_G("resnet_2blocks", 3, 3, ngf=4, fully_reversible=True)
    x = rand(1, 3, 8, 8)
    torch.testing.assert_close(gen(x, "AtoB"), x, atol=1e-5, rtol=0)


def test_fully_reversible_channel_lift():
    gen = randomize(FullyReversibleGenerator(1, 3, ngf=4, n_blocks=2, n_downsampling=1), std=0.1)
    a = rand(1, 1, 8, 8)
    with torch.no_grad():
        b = gen(a, "AtoB")
        assert b.shape == (1, 3, 8, 8) and gen(b, "BtoA").shape == (1, 1, 8, 8)
        # The full chain (before dropping the padded channels) is still exactly invertible.
        lifted = torch.cat([a, torch.zeros(1, 2, 8, 8)], 1)
        torch.testing.assert_close(gen.chain.inverse(gen.chain(lifted)), lifted, atol=1e-5,
                                   rtol=0)


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("direction", ["AtoB", "BtoA"])
@pytest.mark.parametrize("mixing", ["1x1conv", "permutation"])
def test_fully_reversible_memory_saving_gradients(dims, direction, mixing):
    gen = randomize(FullyReversibleGenerator(1, 1, ngf=4, n_blocks=2, n_downsampling=1,
                                             dims=dims, mixing=mixing), std=0.05)
    x0 = rand(2, 1, *(4,) * dims)
    weights = rand(2, 1, *(4,) * dims, seed=5)
    grads = []
    for saving in (True, False):
        gen.memory_saving = saving
        gen.zero_grad()
        x = x0.clone().requires_grad_(True)
        (gen(x, direction) * weights).sum().backward()
        grads.append([x.grad] + [p.grad for p in gen.parameters()])
    assert len(grads[0]) > 10
    if mixing == "permutation":  # additive couplings and exact permutations only
        assert_grads_equal(*grads, exact=True)
    else:
        # The 1x1 convolution's input is rebuilt through a float matrix inverse, so the
        # recomputed activations carry round-off: measured <= 7e-6 of each tensor's norm
        # (2D and 3D); 1e-4 leaves margin for other CPUs and still fails any wrong tensor.
        assert_grads_equal(*grads, rtol=1e-4)


def test_fully_reversible_bounded_output():
    gen = randomize(FullyReversibleGenerator(3, 3, ngf=4, n_blocks=1, n_downsampling=1,
                                             bounded_output=True), std=0.3)
    assert gen(rand(1, 3, 8, 8) * 5).abs().max() <= 1


# --------------------------------------------------------------------------- init and errors


def test_init_weights_keeps_zero_init_and_invertible_conv():
    gen = define_rev_G("resnet_2blocks", 3, 3, ngf=4, fully_reversible=True, init_type="xavier")
    convs = [m for m in gen.modules() if isinstance(m, Invertible1x1Conv)]
    for conv in convs:
        eye = torch.eye(conv.weight.shape[0])
        torch.testing.assert_close(conv.weight @ conv.weight.T, eye, atol=1e-5, rtol=0)
    zeroed = [m for m in gen.modules() if getattr(m, "_zero_init", False)]
    assert zeroed and all(not m.weight.any() and not m.bias.any() for m in zeroed)
    others = [m for m in gen.modules()
              if isinstance(m, nn.modules.conv._ConvNd) and not getattr(m, "_zero_init", False)]
    assert others and all(m.weight.any() for m in others)


def _expected_init_std(init_type: str, weight: torch.Tensor, gain: float) -> float:
    fan_in, fan_out = weight[0].numel(), weight.shape[0] * weight[0, 0].numel()
    rows, cols = weight.shape[0], fan_in
    return {"normal": gain,
            "xavier": gain * math.sqrt(2.0 / (fan_in + fan_out)),
            "kaiming": math.sqrt(2.0 / fan_in),  # ReLU gain; the init gain does not apply
            # min(rows, cols) orthogonal vectors of norm `gain` share rows * cols entries
            "orthogonal": gain * math.sqrt(min(rows, cols) / (rows * cols))}[init_type]


@pytest.mark.parametrize("init_type", ["normal", "xavier", "kaiming", "orthogonal"])
def test_init_types(init_type):
    """Each init gives its own distribution: a mix-up of any two fails."""
    torch.manual_seed(0)
    gain = 0.02
    layers = [nn.Conv2d(32, 48, 3), nn.Conv3d(16, 24, 3), nn.Linear(300, 200)]
    norm = nn.BatchNorm2d(2000)
    net = nn.Sequential(*layers, norm)
    for p in net.parameters():  # anything but what init_weights should write
        nn.init.constant_(p, 0.5)
    init_weights(net, init_type, gain)
    for layer in layers:
        w = layer.weight
        expected = _expected_init_std(init_type, w, gain)
        # ~10^4 samples: the sample std is within 1.5% of the true one (5 sigma)
        assert abs(w.std().item() / expected - 1) < 0.05, (layer, w.std().item(), expected)
        assert abs(w.mean().item()) < 0.05 * expected
        assert not layer.bias.any()
        rows = w.reshape(w.shape[0], -1)
        gram = rows @ rows.T / gain**2
        is_orthogonal = torch.allclose(gram, torch.eye(len(rows)), atol=1e-4)
        assert is_orthogonal == (init_type == "orthogonal")
    # affine norms: weight ~ N(1, gain), bias 0, whatever the init type
    assert abs(norm.weight.mean().item() - 1) < 0.002
    assert abs(norm.weight.std().item() / gain - 1) < 0.1
    assert not norm.bias.any()
    # a real discriminator: the first conv has the init's spread and a zero bias
    D = init_weights(define_D("basic", 3, ndf=64, norm="batch"), init_type, gain)
    first = D.model[0]
    expected = _expected_init_std(init_type, first.weight, gain)
    assert abs(first.weight.std().item() / expected - 1) < 0.1 and not first.bias.any()


@pytest.mark.parametrize("build", [
    lambda: define_G("resnet_x", 3, 3),
    lambda: define_G("unet_100", 3, 3),
    lambda: define_G("vgg", 3, 3),
    lambda: define_rev_G("unet_256", 3, 3),
    lambda: define_rev_G("resnet_9blocks", 3, 3, coupling="glow"),
    lambda: define_D("huge", 3),
    lambda: define_G("resnet_9blocks", 3, 3, norm="group"),
    lambda: init_weights(nn.Conv2d(1, 1, 1), "uniform"),
])
def test_bad_names_raise_user_error(build):
    with pytest.raises(UserError):
        build()


def test_bad_inputs_raise_user_error():
    gen = define_rev_G("resnet_1blocks", 3, 1, ngf=2)
    with pytest.raises(UserError, match="channels"):
        gen(rand(1, 1, 8, 8), "AtoB")
    with pytest.raises(UserError, match="divisible"):
        gen(rand(1, 3, 10, 10), "AtoB")
    with pytest.raises(UserError, match="direction"):
        gen(rand(1, 3, 8, 8), "sideways")
    with pytest.raises(UserError, match="divisible"):
        define_G("unet_32", 3, 3, ngf=2)(rand(1, 3, 16, 16))


@pytest.mark.parametrize("fully_reversible", [False, True], ids=["revgan", "fully_reversible"])
def test_generator_activation_memory_is_flat_in_depth(fully_reversible, require):
    """Held after the forward pass: the RevGAN generator's grows only by its encoder and
    decoder (depth-independent); the fully reversible generator's holds just its output."""
    import gc

    from revgan.engine.memory import has_heap_counter, heap_bytes

    require(has_heap_counter(), "needs glibc >= 2.33 for mallinfo2 (Linux): run it on a "
                                "glibc system")

    x = torch.randn(1, 3, 32, 32, requires_grad=True)
    held = {}
    for depth in (2, 16):
        torch.manual_seed(0)
        G = define_rev_G(f"resnet_{depth}blocks", 3, 3, ngf=16,
                         fully_reversible=fully_reversible)
        measurements = []
        for _ in range(3):
            gc.collect()
            before = heap_bytes()
            y = G(x, "AtoB")
            measurements.append(heap_bytes() - before)
            y.mean().backward()
            del y
        held[depth] = min(measurements[1:])  # the first call allocates lazily
    assert held[16] <= 1.1 * held[2] + 64 * 1024, held
