"""The time/memory dial: keeping K blocks' activations changes memory, never gradients."""

from __future__ import annotations

import copy
import gc

import pytest
import torch
from helpers import assert_grads_equal

from revgan.engine.memory import has_heap_counter, heap_bytes
from revgan.networks import define_rev_G


def generator(fully_reversible: bool, dropout: bool = False):
    torch.manual_seed(0)
    net = define_rev_G("resnet_4blocks", 3, 3, ngf=8, fully_reversible=fully_reversible,
                       use_dropout=dropout)
    for p in net.parameters():  # far from the identity (zero-initialised last convs)
        if p.ndim > 2:  # conv weights; the orthogonal 1x1 mixings stay well conditioned
            torch.nn.init.normal_(p, 0.0, 0.1)
    return net


def grads(net, keep: int, direction: str, seed: int = 3):
    net = copy.deepcopy(net)
    net.keep_blocks = keep
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    x.requires_grad_(True)
    torch.manual_seed(seed)
    y = net(x, direction)
    (y * torch.cos(3 * x)).sum().backward()
    return y.detach(), [x.grad] + [p.grad for p in net.parameters()]


@pytest.mark.parametrize("fully_reversible", [False, True], ids=["revgan", "fully_rev"])
@pytest.mark.parametrize("direction", ["AtoB", "BtoA"])
def test_gradients_equal_for_every_keep_blocks(fully_reversible, direction):
    net = generator(fully_reversible)
    depth = len(net.core if not fully_reversible else net.chain)
    out0, reference = grads(net, 0, direction)
    plain = copy.deepcopy(net)
    plain.memory_saving = False
    out_plain, naive = grads(plain, 0, direction)
    assert torch.equal(out0, out_plain)
    # the learned 1x1 mixings are rebuilt through a float matrix inverse: round-off only
    rtol = 1e-4 if fully_reversible else 1e-5
    assert_grads_equal(reference, naive, rtol=rtol)
    for keep in (1, depth // 2, depth, depth + 5):
        out, kept = grads(net, keep, direction)
        assert torch.equal(out, out0), keep
        assert_grads_equal(kept, reference, rtol=rtol)
        if not fully_reversible:  # fixed-point couplings: bit for bit
            assert_grads_equal(kept, reference, exact=True)


def test_keep_blocks_with_dropout_replays_masks():
    net = generator(False, dropout=True)
    _, reference = grads(net, 0, "AtoB")
    _, kept = grads(net, 2, "AtoB")
    assert_grads_equal(kept, reference, exact=True)


def test_memory_held_grows_with_keep_blocks(require):
    require(has_heap_counter(), "needs glibc's mallinfo2 to measure the heap")
    net = generator(False)
    x = torch.rand(1, 3, 32, 32) * 2 - 1

    def held(keep: int) -> int:
        net.keep_blocks = keep
        gc.collect()
        before = heap_bytes()
        y = net.core(net.encode(x, "A"))
        amount = heap_bytes() - before
        y.sum().backward()
        return amount

    h0, h2, h4 = (min(held(k) for _ in range(2)) for k in (0, 2, 4))
    assert h0 < h2 < h4
