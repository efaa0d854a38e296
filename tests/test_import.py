"""`revgan import`: generators of pytorch-CycleGAN-and-pix2pix and of the original RevGAN.

Each test builds, here, a module with the upstream's parameter names and shapes (from its
published architecture), fills every tensor with random values (biases that revgan drops
included, so that dropping a bias that mattered would show), saves it as the upstream does
(``torch.save(net.state_dict(), path)``), imports it and compares revgan's output with the
module's own (eval mode).
"""

from __future__ import annotations

import functools
import pickle

import pytest
import torch
from helpers import cli_error, run_cli
from torch import nn

import revgan
from revgan.infer.load import load_generator
from revgan.interop.importer import import_checkpoints

TOLERANCE = 1e-5


# --------------------------------------------------------------------------- upstream modules


def upstream_norm(norm: str):
    if norm == "instance":
        return functools.partial(nn.InstanceNorm2d, affine=False, track_running_stats=False)
    return functools.partial(nn.BatchNorm2d, affine=True, track_running_stats=True)


class Holder(nn.Module):
    """``self.model`` and a forward through it, as the upstream generators have."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x)


class UpResnetBlock(nn.Module):
    def __init__(self, dim, norm_layer, use_dropout, use_bias):
        super().__init__()
        seq = [nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, bias=use_bias), norm_layer(dim),
               nn.ReLU(True)]
        seq += [nn.Dropout(0.5)] if use_dropout else []
        seq += [nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, bias=use_bias), norm_layer(dim)]
        self.conv_block = nn.Sequential(*seq)

    def forward(self, x):
        return x + self.conv_block(x)


def encoder_layers(input_nc, ngf, norm_layer, use_bias, n_down=2):
    seq = [nn.ReflectionPad2d(3), nn.Conv2d(input_nc, ngf, 7, bias=use_bias), norm_layer(ngf),
           nn.ReLU(True)]
    for i in range(n_down):
        ch = ngf * 2**i
        seq += [nn.Conv2d(ch, 2 * ch, 3, stride=2, padding=1, bias=use_bias),
                norm_layer(2 * ch), nn.ReLU(True)]
    return seq


def decoder_layers(output_nc, ngf, norm_layer, use_bias, n_down=2):
    seq = []
    for i in range(n_down):
        ch = ngf * 2 ** (n_down - i)
        seq += [nn.ConvTranspose2d(ch, ch // 2, 3, stride=2, padding=1, output_padding=1,
                                   bias=use_bias), norm_layer(ch // 2), nn.ReLU(True)]
    return seq + [nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, 7), nn.Tanh()]


def upstream_resnet(input_nc, output_nc, ngf, norm, n_blocks, use_dropout=False):
    norm_layer, use_bias = upstream_norm(norm), norm == "instance"
    core = [UpResnetBlock(ngf * 4, norm_layer, use_dropout, use_bias) for _ in range(n_blocks)]
    return Holder(nn.Sequential(*encoder_layers(input_nc, ngf, norm_layer, use_bias), *core,
                                *decoder_layers(output_nc, ngf, norm_layer, use_bias)))


class UpUnetBlock(nn.Module):
    def __init__(self, outer, inner, norm_layer, use_bias, input_nc=None, sub=None,
                 outermost=False, use_dropout=False):
        super().__init__()
        self.outermost = outermost
        down = nn.Conv2d(input_nc or outer, inner, 4, stride=2, padding=1, bias=use_bias)
        if outermost:
            seq = [down, sub, nn.ReLU(True), nn.ConvTranspose2d(inner * 2, outer, 4, 2, 1),
                   nn.Tanh()]
        elif sub is None:
            seq = [nn.LeakyReLU(0.2, True), down, nn.ReLU(True),
                   nn.ConvTranspose2d(inner, outer, 4, 2, 1, bias=use_bias), norm_layer(outer)]
        else:
            seq = [nn.LeakyReLU(0.2, True), down, norm_layer(inner), sub, nn.ReLU(True),
                   nn.ConvTranspose2d(inner * 2, outer, 4, 2, 1, bias=use_bias),
                   norm_layer(outer)] + ([nn.Dropout(0.5)] if use_dropout else [])
        self.model = nn.Sequential(*seq)

    def forward(self, x):
        return self.model(x) if self.outermost else torch.cat([x, self.model(x)], 1)


def upstream_unet(input_nc, output_nc, num_downs, ngf, norm, use_dropout=True):
    kw = dict(norm_layer=upstream_norm(norm), use_bias=norm == "instance")
    block = UpUnetBlock(ngf * 8, ngf * 8, **kw)
    for _ in range(num_downs - 5):
        block = UpUnetBlock(ngf * 8, ngf * 8, sub=block, use_dropout=use_dropout, **kw)
    for mult in (4, 2, 1):
        block = UpUnetBlock(ngf * mult, ngf * mult * 2, sub=block, **kw)
    return Holder(UpUnetBlock(output_nc, ngf, input_nc=input_nc, sub=block, outermost=True,
                              **kw))


class UpCoupling(nn.Module):
    """memcnn's additive block inside RevGAN's ReversibleResnetBlock: ``rev_block.rev_block``
    holding ``Fm`` and ``Gm``; y1 = x1 + Fm(x2), y2 = x2 + Gm(y1)."""

    def __init__(self, dim, norm_layer, use_bias):
        super().__init__()

        def branch():
            return nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, bias=use_bias),
                                 norm_layer(dim), nn.ReLU(True), nn.ReflectionPad2d(1),
                                 nn.Conv2d(dim, dim, 3, bias=use_bias), norm_layer(dim))

        self.rev_block = nn.Module()
        self.rev_block.rev_block = nn.Module()
        self.rev_block.rev_block.Gm, self.rev_block.rev_block.Fm = branch(), branch()

    def forward(self, x, inverse=False):
        F, G = self.rev_block.rev_block.Fm, self.rev_block.rev_block.Gm
        a, b = torch.chunk(x, 2, dim=1)
        if inverse:
            b = b - G(a)
            return torch.cat([a - F(b), b], 1)
        a = a + F(b)
        return torch.cat([a, b + G(a)], 1)


class UpCore(nn.Module):
    def __init__(self, ngf, n_blocks, norm_layer, use_bias):
        super().__init__()
        self.model = nn.Sequential(*[UpCoupling(ngf * 2, norm_layer, use_bias)
                                     for _ in range(n_blocks)])

    def forward(self, x, inverse=False):
        for block in (reversed(self.model) if inverse else self.model):
            x = block(x, inverse)
        return x


def revgan2019_parts(nc_A, nc_B, ngf, n_blocks):
    """The five networks of RevGAN's unpaired model (instance norm that tracks statistics,
    as RevGAN's get_norm_layer builds it)."""
    norm_layer = functools.partial(nn.InstanceNorm2d, affine=False, track_running_stats=True)
    return {"G_A_enc": Holder(nn.Sequential(*encoder_layers(nc_A, ngf, norm_layer, True))),
            "G_B_enc": Holder(nn.Sequential(*encoder_layers(nc_B, ngf, norm_layer, True))),
            "G_core": UpCore(ngf, n_blocks, norm_layer, True),
            "G_A_dec": Holder(nn.Sequential(*decoder_layers(nc_B, ngf, norm_layer, True))),
            "G_B_dec": Holder(nn.Sequential(*decoder_layers(nc_A, ngf, norm_layer, True)))}


def randomise(net: nn.Module, seed: int) -> nn.Module:
    """Every tensor random: weights, biases (also those revgan drops), batch-norm stats."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in net.state_dict().items():
            if name.endswith("num_batches_tracked"):
                tensor.fill_(7)
            elif name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=gen) + 0.5)
            elif name.endswith("weight") and tensor.dim() == 1:
                tensor.copy_(torch.rand(tensor.shape, generator=gen) + 0.5)
            elif tensor.dim() > 1:  # conv weights, scaled by their fan-in
                tensor.copy_(torch.randn(tensor.shape, generator=gen) / tensor[0].numel() ** 0.5)
            else:
                tensor.copy_(torch.randn(tensor.shape, generator=gen) * 0.5)
    return net.eval()


def rand_image(channels: int, size: int, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(1, channels, size, size, generator=gen) * 2 - 1


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


# --------------------------------------------------------------------------- equality


@pytest.mark.parametrize("netG,norm,size", [
    ("resnet_6blocks", "instance", 16), ("resnet_9blocks", "batch", 16),
    ("unet_128", "instance", 128), ("unet_128", "batch", 128),
    ("unet_256", "instance", 256), ("unet_256", "batch", 256)])
def test_upstream_generator_imports_exactly(tmp_path, capsys, netG, norm, size):
    if netG.startswith("resnet"):
        n_blocks = int(netG.removeprefix("resnet_").removesuffix("blocks"))
        net = upstream_resnet(3, 2, 4, norm, n_blocks, use_dropout=norm == "batch")
        kind = "cyclegan"
    else:
        net = upstream_unet(3, 2, {"unet_128": 7, "unet_256": 8}[netG], 2, norm)
        kind = "pix2pix"
    randomise(net, seed=3)
    path = tmp_path / "latest_net_G.pth"
    # DataParallel's "module." prefix, as multi-GPU upstream runs may save it
    state = nn.DataParallel(net).state_dict() if norm == "batch" else net.state_dict()
    if netG == "unet_128":  # files of PyTorch < 0.4.1 have no num_batches_tracked
        state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    torch.save(state, path)

    result = import_checkpoints(kind, [path], "imported", tmp_path / "ck")
    G, cfg = load_generator(result.run_dir)
    assert (cfg.netG, cfg.norm, cfg.ngf, cfg.input_nc, cfg.output_nc) == (netG, norm, 4 if
                                                                            kind == "cyclegan"
                                                                            else 2, 3, 2)
    x = rand_image(3, size)
    with torch.no_grad():
        diff = max_diff(G(x, "AtoB"), net(x))
    print(f"{netG} {norm}: max |revgan - upstream| = {diff:.2e}")
    assert diff <= TOLERANCE
    if norm == "instance":  # the cancelled biases were dropped, and it says so
        assert any("biases that the following instance norm cancels" in n for n in result.notes)


def test_cyclegan_pair_both_directions(tmp_path):
    G_A = randomise(upstream_resnet(3, 1, 4, "instance", 2), seed=5)
    G_B = randomise(upstream_resnet(1, 3, 4, "instance", 2), seed=6)
    torch.save(G_A.state_dict(), tmp_path / "latest_net_G_A.pth")
    torch.save(G_B.state_dict(), tmp_path / "latest_net_G_B.pth")
    # given in the "wrong" order: the file names decide which is which
    result = import_checkpoints("cyclegan", [tmp_path / "latest_net_G_B.pth",
                                             tmp_path / "latest_net_G_A.pth"], "pair",
                                tmp_path / "ck")
    G, cfg = load_generator(result.run_dir)
    assert cfg.model == "cycle_gan"
    a, b = rand_image(3, 16), rand_image(1, 16)
    with torch.no_grad():
        assert max_diff(G(a, "AtoB"), G_A(a)) <= TOLERANCE
        assert max_diff(G(b, "BtoA"), G_B(b)) <= TOLERANCE
        translator = revgan.load(result.run_dir)  # the Python API reads imported runs alike
        assert translator.directions == ("AtoB", "BtoA")
        assert max_diff(translator.translate(b[0], direction="BtoA"), G_B(b)[0]) <= TOLERANCE


def test_revgan2019_checkpoint_both_directions(tmp_path):
    parts = revgan2019_parts(3, 1, ngf=4, n_blocks=3)
    for index, (part, net) in enumerate(parts.items()):
        randomise(net, seed=10 + index)
        torch.save(net.state_dict(), tmp_path / f"7_net_{part}.pth")
    result = import_checkpoints("revgan", sorted(tmp_path.glob("7_net_*.pth")), "rev",
                                tmp_path / "ck")
    G, cfg = load_generator(result.run_dir)
    assert (cfg.model, cfg.netG, cfg.ngf, cfg.input_nc, cfg.output_nc) == (
        "unpaired_revgan", "resnet_3blocks", 4, 3, 1)
    a, b = rand_image(3, 16), rand_image(1, 16, seed=2)
    for net in parts.values():  # RevGAN's test.py never calls eval(): instance norm then
        net.train()             # uses each image's statistics, not its running ones
    with torch.no_grad():
        fake_B = parts["G_A_dec"](parts["G_core"](parts["G_A_enc"](a)))
        fake_A = parts["G_B_dec"](parts["G_core"](parts["G_B_enc"](b), inverse=True))
        diff_AB, diff_BA = max_diff(G(a, "AtoB"), fake_B), max_diff(G(b, "BtoA"), fake_A)
    print(f"RevGAN: max diff A→B {diff_AB:.2e}, B→A {diff_BA:.2e}")
    assert diff_AB <= TOLERANCE and diff_BA <= TOLERANCE
    assert any("running statistics" in n for n in result.notes)


# --------------------------------------------------------------------------- refusals


def _nothing_written(folder) -> bool:
    return not folder.exists() or not any(folder.iterdir())


def test_mismatching_architecture_is_one_line(tmp_path, capsys):
    net = randomise(upstream_resnet(3, 3, 4, "instance", 2), seed=1)
    torch.save(net.state_dict(), tmp_path / "latest_net_G.pth")
    line = cli_error(capsys, "import", "--from", "cyclegan", "--checkpoint",
                     tmp_path / "latest_net_G.pth", "--name", "x", "--netG", "resnet_6blocks",
                     "--checkpoints_dir", tmp_path / "ck")
    assert "architecture mismatch at 'model.12.weight' of latest_net_G.pth" in line, line
    assert _nothing_written(tmp_path / "ck")


def test_code_executing_pickle_is_refused(tmp_path, capsys):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil_net_G.pth"
    with open(path, "wb") as handle:
        pickle.dump({"model.1.weight": Payload()}, handle)
    line = cli_error(capsys, "import", "--from", "pix2pix", "--checkpoint", path, "--name", "x",
                     "--checkpoints_dir", tmp_path / "ck")
    assert "refusing to load evil_net_G.pth" in line
    assert not marker.exists() and _nothing_written(tmp_path / "ck")


def test_not_a_checkpoint_is_one_line(tmp_path, capsys):
    path = tmp_path / "notes_net_G.pth"
    path.write_text("just some text, not a checkpoint\n")
    line = cli_error(capsys, "import", "--from", "pix2pix", "--checkpoint", path, "--name", "x",
                     "--checkpoints_dir", tmp_path / "ck")
    assert "is not a PyTorch checkpoint" in line
    assert _nothing_written(tmp_path / "ck")


def test_cli_import_then_translate(tmp_path, capsys):
    """The imported run is a normal run: `revgan translate` uses it as it is."""
    import numpy as np
    from PIL import Image

    G_A = randomise(upstream_resnet(3, 3, 4, "instance", 1), seed=8)
    G_B = randomise(upstream_resnet(3, 3, 4, "instance", 1), seed=9)
    torch.save(G_A.state_dict(), tmp_path / "latest_net_G_A.pth")
    torch.save(G_B.state_dict(), tmp_path / "latest_net_G_B.pth")
    run_cli("import", "--from", "cyclegan", "--checkpoint", tmp_path / "latest_net_G_A.pth",
            tmp_path / "latest_net_G_B.pth", "--name", "zoo", "--checkpoints_dir",
            tmp_path / "ck")
    out = capsys.readouterr().out
    assert "note: " in out and "cancels" in out and "as cycle_gan run" in out
    pixels = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "in.png")
    run_cli("translate", "--model_dir", tmp_path / "ck" / "zoo", "--input", tmp_path / "in.png",
            "--output", tmp_path / "out.png", "--direction", "BtoA", "--window_size", "32",
            "--gpu_ids", "-1", "--no_progress")
    written = np.asarray(Image.open(tmp_path / "out.png")).astype(np.float64)
    x = torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 127.5 - 1
    with torch.no_grad():  # one 32x32 window: the upstream module on the whole image
        expected = (G_B(x)[0].permute(1, 2, 0).numpy() + 1) * 127.5
    assert np.abs(written - expected).max() <= 1.0  # 8-bit rounding
