"""Resuming a run: the schedule of the resumed options, and bit-exact continuation."""

from __future__ import annotations

import argparse

import pytest
import torch

from revgan.models.base import BaseModel


def _scheduled_model(policy: str, n_epochs: int, n_epochs_decay: int,
                     lr_decay_iters: int) -> BaseModel:
    """A model with one optimiser and the schedule of these options (as ``setup`` makes it)."""
    opt = argparse.Namespace(isTrain=True, amp="none", compile=None, lr=0.01, beta1=0.5,
                             lr_policy=policy, n_epochs=n_epochs, n_epochs_decay=n_epochs_decay,
                             epoch_count=1, lr_decay_iters=lr_decay_iters)
    model = BaseModel(opt, torch.device("cpu"))
    model.nets["G"] = torch.nn.Linear(2, 2)
    model.make_optimizer("G", [model.nets["G"]])
    model.setup()
    return model


def _epoch(model: BaseModel) -> None:
    """One epoch as the trainer runs it: an optimiser step, then the schedule's step."""
    model.optimizers["G"].zero_grad()
    model.nets["G"](torch.ones(1, 2)).sum().backward()
    model.optimizers["G"].step()
    model.update_learning_rate()


@pytest.mark.parametrize("policy", ["linear", "cosine", "step"])
def test_resume_with_a_longer_schedule_follows_the_new_schedule(policy):
    """Two epochs of a 2+2 schedule (step size 2), resumed as a 4+6 schedule (step size 3):
    from the resume on, every epoch's LR is that of a fresh run of the 4+6 schedule."""
    short = _scheduled_model(policy, 2, 2, lr_decay_iters=2)
    for _ in range(2):
        _epoch(short)
    state = short.training_state()

    resumed = _scheduled_model(policy, 4, 6, lr_decay_iters=3)
    resumed.load_training_state(state)
    fresh = _scheduled_model(policy, 4, 6, lr_decay_iters=3)
    for _ in range(2):
        _epoch(fresh)
    seen = []
    for epoch in range(3, 11):
        assert resumed.learning_rates() == fresh.learning_rates(), (policy, epoch)
        seen.append(fresh.learning_rates()["G"])
        _epoch(resumed)
        _epoch(fresh)
    assert len(set(seen)) > 2  # the schedule really changes the LR over these epochs


@pytest.mark.parametrize("policy", ["linear", "cosine", "step", "plateau"])
def test_resume_with_the_same_schedule_keeps_the_lr_sequence(policy):
    straight = _scheduled_model(policy, 2, 3, lr_decay_iters=2)
    first = _scheduled_model(policy, 2, 3, lr_decay_iters=2)
    for _ in range(3):
        _epoch(straight)
        _epoch(first)
    resumed = _scheduled_model(policy, 2, 3, lr_decay_iters=2)
    resumed.load_training_state(first.training_state())
    for _ in range(3):
        assert resumed.learning_rates() == straight.learning_rates()
        _epoch(resumed)
        _epoch(straight)
