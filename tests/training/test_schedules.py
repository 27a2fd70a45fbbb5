"""Learning-rate schedules for every run length, down to one optimizer step in all."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from convlab.config import OptimConfig
from convlab.training.optim import OPTIMIZERS, build_schedule

PEAK = 3e-3


def _run_schedule(schedule_name: str, optimizer_name: str, epochs: int, steps: int):
    """Step a schedule as training/loop.py does; return the lr in effect at each optimizer step and after."""
    config = OptimConfig(optimizer=optimizer_name, lr=PEAK, schedule=schedule_name)
    stand_in = OPTIMIZERS[optimizer_name]([torch.zeros(1, requires_grad=True)], config)
    schedule = build_schedule(stand_in, config, epochs, steps)
    used, logged = [], []
    for _ in range(epochs):
        for _ in range(steps):
            used.append(stand_in.param_groups[0]["lr"])
            stand_in.step()
            schedule.after_batch()
        logged.append(stand_in.param_groups[0]["lr"])  # what the loop logs as the epoch's "lr"
        schedule.after_epoch()
    return used, logged


@settings(max_examples=150, deadline=None)
@given(schedule_name=st.sampled_from(["none", "step", "cosine", "onecycle", "poly"]),
       optimizer_name=st.sampled_from(["sgd", "adam", "adamw"]),
       epochs=st.integers(1, 12), dataset_size=st.integers(1, 300), batch_size=st.integers(1, 400))
def test_every_schedule_steps_through_any_run_length(schedule_name, optimizer_name, epochs, dataset_size,
                                                     batch_size):
    steps = -(-dataset_size // batch_size)  # len(BatchLoader): the last batch may be partial
    used, logged = _run_schedule(schedule_name, optimizer_name, epochs, steps)
    assert len(used) == epochs * steps
    for lr in used:
        assert math.isfinite(lr) and 0 < lr <= PEAK * (1 + 1e-9), (used, lr)
    for lr in logged:  # after the last step a schedule may have annealed to 0, never below or above the peak
        assert math.isfinite(lr) and 0 <= lr <= PEAK * (1 + 1e-9), (logged, lr)


@pytest.mark.parametrize("total", range(1, 9))
def test_onecycle_with_few_steps_still_reaches_the_peak(total):
    used, _ = _run_schedule("onecycle", "adam", 1, total)
    assert max(used) == pytest.approx(PEAK)
    if total >= 3:  # room for a warm-up and an anneal: it starts and ends below the peak
        assert used[0] < PEAK and used[-1] < PEAK


def test_onecycle_long_runs_keep_their_quarter_warm_up():
    used, _ = _run_schedule("onecycle", "adam", 4, 25)
    assert used.index(max(used)) == 24  # pct_start 0.25 of 100 steps: the peak at step 24


@pytest.mark.slow
def test_cli_onecycle_run_of_four_steps(tmp_path):
    from convlab.cli import main

    out = tmp_path / "run"
    assert main(["train", "--epochs", "4", "--batch-size", "2000", "--out", str(out), "--quiet"]) == 0
    assert (out / "model.safetensors").is_file()


def test_poly_follows_the_segmentation_references_formula():
    """lr x (1 - step / total) ** 0.9 at every step, as torchvision's segmentation reference schedules it."""
    used, logged = _run_schedule("poly", "sgd", 2, 5)
    assert used == pytest.approx([PEAK * (1 - step / 10) ** 0.9 for step in range(10)], rel=1e-9)
    assert logged[-1] == 0.0
