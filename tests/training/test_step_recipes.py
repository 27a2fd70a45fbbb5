"""--warmup-epochs, --grad-accum and --clip-grad: checked against hand-computed rates, a big batch and a hand-
clipped gradient, and resumed bit-identically."""
from __future__ import annotations

import io
import math

import pytest
import torch
from cli_output import assert_one_line_error, run_cli
from in_process import train_in_one_thread
from rich.console import Console
from torch import nn

import convlab
from convlab.config import OptimConfig
from convlab.training.callbacks import Callback
from convlab.training.checkpoint import (
    CHECKPOINTS,
    LAST,
    Checkpointer,
    TrainingInterrupted,
    checkpoint_position,
)
from convlab.training.loop import LoopState, train_one_epoch
from convlab.training.optim import OPTIMIZERS, OptimizerSteps, build_schedule
from convlab.training.performance import Precision

BASE = 0.1


def _rates(schedule_name: str, epochs: int, batches: int, **options) -> list[float]:
    """The lr each optimizer step of a run used, stepping the schedule as training/loop.py does."""
    config = OptimConfig(optimizer="sgd", lr=BASE, schedule=schedule_name, **options)
    stand_in = OPTIMIZERS["sgd"]([torch.zeros(1, requires_grad=True)], config)
    schedule = build_schedule(stand_in, config, epochs, batches)
    steps = OptimizerSteps.of(config)
    used = []
    for _ in range(epochs):
        for batch in range(1, batches + 1):
            if steps.ends_group(batch, batches):
                used.append(stand_in.param_groups[0]["lr"])
                stand_in.step()
                schedule.after_batch()
        schedule.after_epoch()
    return used


# --- warm-up ------------------------------------------------------------------------------------------------

REST = {  # the rate at step i (from 0) of a schedule R steps long, written out by hand
    "none": lambda i, r: BASE,
    "step": lambda i, r: BASE * (1 if i < r // 2 else 0.1 if i < (3 * r) // 4 else 0.01),
    "cosine": lambda i, r: BASE * (1 + math.cos(math.pi * i / r)) / 2,
    "poly": lambda i, r: BASE * (1 - i / r) ** 0.9,
}


@pytest.mark.parametrize("schedule_name", sorted(REST))
def test_warmup_ramps_linearly_then_runs_the_schedule_over_the_remaining_steps(schedule_name):
    # 3 epochs of 8 steps, 1.5 epochs of warm-up: 12 ramp steps at k / 13 of the rate, then 12 of the schedule
    used = _rates(schedule_name, 3, 8, warmup_epochs=1.5)
    assert len(used) == 24
    assert used[:12] == pytest.approx([BASE * k / 13 for k in range(1, 13)], rel=1e-12)
    assert used[12:] == pytest.approx([REST[schedule_name](i, 12) for i in range(12)], rel=1e-12)


def test_the_step_schedule_keeps_stepping_per_epoch_without_warmup():
    used = _rates("step", 4, 3)  # milestones at epochs 2 and 3
    assert used == pytest.approx([BASE] * 6 + [BASE / 10] * 3 + [BASE / 100] * 3, rel=1e-12)


def test_onecycle_warmup_sets_the_length_of_its_own_ramp():
    used = _rates("onecycle", 4, 10, warmup_epochs=0.5)  # 5 steps of warm-up, the peak at step 6 (not step 10)
    assert used.index(max(used)) == 5 and max(used) == pytest.approx(BASE)
    assert used[0] == pytest.approx(BASE / 25)  # one-cycle's own start: max_lr / div_factor
    assert all(a < b for a, b in zip(used[:6], used[1:6]))
    assert _rates("onecycle", 4, 10).index(BASE) == 9  # without it: the default quarter of the run


@pytest.mark.parametrize("schedule_name", ["none", "step", "cosine", "onecycle", "poly"])
def test_no_warmup_is_the_schedule_as_before(schedule_name):
    config = OptimConfig(lr=BASE, schedule=schedule_name)
    stand_in = OPTIMIZERS["adam"]([torch.zeros(1, requires_grad=True)], config)
    scheduler = build_schedule(stand_in, config, 3, 7).scheduler
    expected = {"none": type(None), "step": torch.optim.lr_scheduler.MultiStepLR,
                "cosine": torch.optim.lr_scheduler.CosineAnnealingLR, "onecycle": torch.optim.lr_scheduler.OneCycleLR,
                "poly": torch.optim.lr_scheduler.PolynomialLR}[schedule_name]
    assert type(scheduler) is expected


def test_warmup_as_long_as_the_run_is_refused(capsys, tmp_path):
    code, _, err = run_cli(capsys, "train", "--epochs", "2", "--warmup-epochs", "2", "--out", str(tmp_path / "r"))
    assert_one_line_error(code, err, "--warmup-epochs 2 must be fewer than --epochs 2")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("flag, value", [("--grad-accum", "0"), ("--clip-grad", "-1"), ("--warmup-epochs", "-0.5")])
def test_bad_values_are_one_line_errors(capsys, flag, value):
    code, _, err = run_cli(capsys, "train", flag, value)
    assert_one_line_error(code, err, flag)


# --- accumulation -------------------------------------------------------------------------------------------

class Batches(list):
    """A list of (images, labels) batches that the loop takes for a loader."""

    device = torch.device("cpu")


def _data(n: int = 26):
    generator = torch.Generator().manual_seed(0)
    return torch.randn(n, 1, 6, 6, generator=generator, dtype=torch.float64), torch.arange(n) % 3


def _batches(images, labels, size: int) -> Batches:
    return Batches((images[i:i + size], labels[i:i + size]) for i in range(0, len(labels), size))


def _no_batchnorm_net() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(64, 3)).double()


def _train(batches: Batches, grad_accum: int, clip_grad: float = 0.0, epochs: int = 2,
           precision: Precision | None = None) -> nn.Module:
    """`epochs` of SGD with momentum and a cosine schedule through the loop's own train_one_epoch."""
    model = _no_batchnorm_net()
    config = OptimConfig(optimizer="sgd", lr=0.05, schedule="cosine", grad_accum=grad_accum, clip_grad=clip_grad)
    optimizer = OPTIMIZERS["sgd"](list(model.parameters()), config)
    schedule = build_schedule(optimizer, config, epochs, len(batches))
    state = LoopState(model, optimizer, epochs, len(batches))
    for _ in range(epochs):
        train_one_epoch(state, batches, schedule, nn.CrossEntropyLoss(), Callback(), precision,
                        optimizer_steps=OptimizerSteps.of(config))
    return model


def _same(a: nn.Module, b: nn.Module, tol: float) -> bool:
    return all(torch.allclose(x, y, rtol=0, atol=tol) for x, y in zip(a.parameters(), b.parameters()))


def test_accumulating_three_batches_of_four_equals_batches_of_twelve():
    images, labels = _data(26)  # 7 batches of 4 (the last of 2) in groups of 3 = batches of 12, 12 and 2
    accumulated = _train(_batches(images, labels, 4), grad_accum=3)
    big = _train(_batches(images, labels, 12), grad_accum=1)
    assert _same(accumulated, big, 1e-12)
    assert not _same(_train(_batches(images, labels, 4), grad_accum=1), big, 1e-3)  # the option does something


def test_accumulation_weighs_a_short_last_batch_by_its_images():
    images, labels = _data(10)  # batches of 4, 4 and 2 in one group = one batch of 10
    assert _same(_train(_batches(images, labels, 4), grad_accum=3), _train(_batches(images, labels, 10), 1), 1e-12)


def test_accumulation_and_clipping_together_equal_the_clipped_big_batch():
    images, labels = _data(24)
    clipped = _train(_batches(images, labels, 12), grad_accum=1, clip_grad=0.05)
    assert _same(_train(_batches(images, labels, 4), grad_accum=3, clip_grad=0.05), clipped, 1e-12)
    assert not _same(_train(_batches(images, labels, 12), grad_accum=1), clipped, 1e-3)


def test_accumulation_under_a_grad_scaler_divides_the_unscaled_sum():
    """--amp fp16's GradScaler multiplies every batch's loss by its scale: the step takes it out before dividing
    by the group's images (and before clipping), so the weights are the unscaled run's."""
    images, labels = _data(26)
    scaled = Precision("cpu", None, torch.amp.GradScaler("cpu", init_scale=2.0 ** 10))
    big = _train(_batches(images, labels, 12), grad_accum=1, clip_grad=0.05)
    assert _same(_train(_batches(images, labels, 4), grad_accum=3, clip_grad=0.05, precision=scaled), big, 1e-12)


def test_the_schedule_counts_optimizer_steps():
    # 7 batches in groups of 3: 3 optimizer steps per epoch, so cosine anneals over 6 steps of 2 epochs
    used = _rates("cosine", 2, 7, grad_accum=3)
    assert used == pytest.approx([BASE * (1 + math.cos(math.pi * i / 6)) / 2 for i in range(6)], rel=1e-12)


def test_under_ddp_only_the_last_batch_of_a_group_syncs(tmp_path, monkeypatch):
    """A one-process gloo group: DistributedDataParallel.no_sync is entered for the batches that only
    accumulate, and the result still equals the big batch."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        entered = []
        original = DistributedDataParallel.no_sync

        def no_sync(self):
            entered.append(True)
            return original(self)

        monkeypatch.setattr(DistributedDataParallel, "no_sync", no_sync)
        images, labels = _data(26)
        model = _no_batchnorm_net()
        wrapped = DistributedDataParallel(model)
        config = OptimConfig(optimizer="sgd", lr=0.05, grad_accum=3)
        optimizer = OPTIMIZERS["sgd"](list(model.parameters()), config)
        schedule = build_schedule(optimizer, config, 1, 7)
        train_one_epoch(LoopState(wrapped, optimizer, 1, 7), _batches(images, labels, 4), schedule,
                        nn.CrossEntropyLoss(), Callback(), optimizer_steps=OptimizerSteps.of(config))
    finally:
        dist.destroy_process_group()
    assert len(entered) == 4  # batches 1, 2, 4, 5 of groups (1-3), (4-6), (7)
    big = _no_batchnorm_net()
    big_optimizer = OPTIMIZERS["sgd"](list(big.parameters()), config)
    train_one_epoch(LoopState(big, big_optimizer, 1, 3), _batches(images, labels, 12),
                    build_schedule(big_optimizer, OptimConfig(optimizer="sgd", lr=0.05), 1, 3),
                    nn.CrossEntropyLoss(), Callback())
    assert _same(model, big, 1e-12)


# --- clipping -----------------------------------------------------------------------------------------------

class Known(nn.Module):
    """Two parameters whose gradients are (3, 4) and (12,): a global L2 norm of 13."""

    def __init__(self):
        super().__init__()
        self.a = nn.Parameter(torch.zeros(2))
        self.b = nn.Parameter(torch.zeros(1))


def _known_step(model, batch, loss_fn):
    loss = (model.a * torch.tensor([3.0, 4.0])).sum() + 12.0 * model.b.sum()
    return loss, 1, None


def _clip_once(clip_grad: float, precision: Precision | None = None) -> Known:
    model = Known()
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    schedule = build_schedule(optimizer, OptimConfig(), 1, 1)
    train_one_epoch(LoopState(model, optimizer, 1, 1), Batches([None]), schedule, None, Callback(), precision,
                    _known_step, OptimizerSteps(clip_grad=clip_grad))
    return model


def test_clipping_scales_a_larger_gradient_norm_down_to_the_limit():
    model = _clip_once(6.5)  # 13 -> 6.5: every gradient halved, and one SGD step of lr 1 moves by them
    assert model.a.grad.tolist() == pytest.approx([1.5, 2.0]) and model.b.grad.tolist() == pytest.approx([6.0])
    assert model.a.tolist() == pytest.approx([-1.5, -2.0]) and model.b.tolist() == pytest.approx([-6.0])
    norm = torch.cat([model.a.grad, model.b.grad]).norm()
    assert float(norm) == pytest.approx(6.5)


def test_clipping_leaves_a_smaller_gradient_norm_untouched():
    model = _clip_once(20.0)
    assert model.a.grad.tolist() == [3.0, 4.0] and model.b.grad.tolist() == [12.0]
    assert model.a.tolist() == [-3.0, -4.0] and model.b.tolist() == [-12.0]


def test_clipping_acts_on_the_unscaled_gradients_of_a_grad_scaler():
    # a GradScaler multiplies the loss by 2 ** 16; the clip must see the true norm 13, not 13 x 65536
    precision = Precision("cpu", None, torch.amp.GradScaler("cpu", init_scale=2.0 ** 16))
    model = _clip_once(6.5, precision)
    assert model.a.grad.tolist() == pytest.approx([1.5, 2.0]) and model.b.grad.tolist() == pytest.approx([6.0])
    assert model.a.tolist() == pytest.approx([-1.5, -2.0])


# --- resume -------------------------------------------------------------------------------------------------

RECIPE = dict(data="digits", model="tiny-cnn", epochs=2, batch_size=64, schedule="cosine", optimizer="sgd", lr=0.05,
              warmup_epochs=0.5, grad_accum=3, clip_grad=0.5, seed=2, deterministic=True, quiet=True)


def _weights(run_dir) -> dict[str, bytes]:
    from safetensors import safe_open

    with safe_open(str(run_dir / "model.safetensors"), framework="pt") as handle:
        return {name: handle.get_tensor(name).numpy().tobytes() for name in handle.keys()}


def _epoch_rows(run_dir) -> list[str]:
    return [",".join(row.split(",")[:6]) for row in (run_dir / "metrics.csv").read_text().splitlines()]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("reference") / "run"
    train_in_one_thread(out=str(out), **RECIPE)
    return out


def test_a_crash_after_a_step_checkpoint_inside_a_group_resumes_bit_identical(reference, tmp_path, monkeypatch):
    """--checkpoint-every 4 with groups of 3: the save due at batch 4 waits for the step after batch 6; a crash
    at batch 7 of epoch 2 resumes from there with the same weights as a run never stopped."""
    saved = Checkpointer.on_batch_end

    def crash_at(self, state, logs):
        saved(self, state, logs)
        if (state.epoch, logs["batch"]) == (2, 7):
            raise RuntimeError("simulated crash")

    monkeypatch.setattr(Checkpointer, "on_batch_end", crash_at)
    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_in_one_thread(out=str(out), checkpoint_every=4, **RECIPE)
    assert checkpoint_position(out / CHECKPOINTS / LAST) == {"epoch": 1, "batch": 6, "world_size": 1}
    monkeypatch.setattr(Checkpointer, "on_batch_end", saved)
    assert "after epoch 1, batch 6" in train_in_one_thread(resume=str(out), quiet=True)
    assert _weights(out) == _weights(reference)
    assert _epoch_rows(out) == _epoch_rows(reference)


def test_ctrl_c_inside_a_group_saves_after_its_step_and_resumes_bit_identical(reference, tmp_path, monkeypatch):
    saved = Checkpointer.on_batch_end

    def interrupt_at(self, state, logs):
        if (state.epoch, logs["batch"]) == (1, 4):
            self.interrupt_requested = True  # what Ctrl-C sets
        saved(self, state, logs)

    monkeypatch.setattr(Checkpointer, "on_batch_end", interrupt_at)
    out = tmp_path / "run"
    with pytest.raises(TrainingInterrupted):
        train_in_one_thread(out=str(out), **RECIPE)
    assert checkpoint_position(out / CHECKPOINTS / LAST) == {"epoch": 0, "batch": 6, "world_size": 1}
    monkeypatch.setattr(Checkpointer, "on_batch_end", saved)
    train_in_one_thread(resume=str(out), quiet=True)
    assert _weights(out) == _weights(reference)
    assert _epoch_rows(out) == _epoch_rows(reference)


# --- the feature cache of a fine-tune -----------------------------------------------------------------------

@pytest.mark.slow  # three fine-tunes
def test_a_head_on_cached_features_accumulates_and_clips_as_on_full_passes(digits_run, tmp_path):
    """The head-only stage trains on cached backbone features through the same loop: the same optimizer steps."""
    small = dict(data="digits", classes="0,1,2", train_per_class=12, epochs=2, batch_size=4, quiet=True,
                 strategy="linear-probe", val_fraction=0.0, grad_accum=3, clip_grad=0.05, optimizer="sgd", lr=0.1)

    def finetune(out, **extra):
        buffer = io.StringIO()
        run = convlab.finetune(str(digits_run.path), out=str(tmp_path / out),
                               console=Console(file=buffer, width=300), **{**small, **extra})
        return run.model.state_dict(), buffer.getvalue()

    cached, said = finetune("cached")
    full, said_full = finetune("full", no_feature_cache=True)
    assert "trains the head on cached backbone features" in said and "not cached (--no-feature-cache)" in said_full
    for key in cached:
        torch.testing.assert_close(cached[key], full[key], rtol=1e-5, atol=1e-6, msg=key)
    plain, _ = finetune("plain", grad_accum=1, clip_grad=0.0)
    assert any(not torch.allclose(plain[key], cached[key], atol=1e-4) for key in cached)  # the options acted
