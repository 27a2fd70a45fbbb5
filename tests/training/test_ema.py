"""--ema: the moving average against a hand computation, what the loop validates with it, the run's saved model,
checkpoints and resume, fine-tuning on cached features, the other tasks, and the values refused."""
from __future__ import annotations

import io
import json
import signal

import pytest
import torch
from rich.console import Console
from torch import nn

import convlab
from cli_output import assert_one_line_error, run_cli
from convlab.layout import CHECKPOINTS, LAST, WEIGHTS
from convlab.training.callbacks import BestModel, Callback, History
from convlab.training.checkpoint import TrainingInterrupted, load_checkpoint
from convlab.training.ema import WeightEMA
from convlab.training.loop import LoopState, classify_validate, fit
from convlab.training.optim import Schedule

DECAY = 0.9


def _tensors(path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def _averaged_in_last(run_dir) -> dict[str, torch.Tensor]:
    """The average the last checkpoint holds, under the model's own names."""
    averaged = load_checkpoint(run_dir / CHECKPOINTS / LAST)["callbacks"]["ema"]["averaged"]
    return {k[len("module."):]: v for k, v in averaged.items() if k.startswith("module.")}


def _assert_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key].cpu(), b[key].cpu()), key


def _differs(a: dict, b: dict) -> bool:
    return any(not torch.equal(a[k].cpu(), b[k].cpu()) for k in a if a[k].is_floating_point())


# --- the average, by hand -------------------------------------------------------------------------------------

def _sgd_steps(model: nn.Module, ema: WeightEMA, steps: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """`steps` SGD steps on random data, each followed by the batch end; the model's state after each, in float64."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    state = LoopState(model, optimizer, epochs=1, steps_per_epoch=steps)
    ema.on_train_begin(state)
    generator = torch.Generator().manual_seed(seed)
    after = []
    for batch in range(1, steps + 1):
        x = torch.randn(8, 3, generator=generator)
        loss = model(x).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        ema.on_batch_end(state, {"batch": batch})
        after.append({k: v.detach().clone().double() for k, v in model.state_dict().items()})
    ema.on_train_end(state)
    return after


def _by_hand(after: list[dict[str, torch.Tensor]], decay: float) -> dict[str, torch.Tensor]:
    """The first step's weights, then decay * average + (1 - decay) * weights at each later step."""
    average = dict(after[0])
    for weights in after[1:]:
        average = {k: decay * average[k] + (1 - decay) * weights[k] for k in average}
    return average


def test_the_average_of_three_sgd_steps_equals_the_hand_computed_one():
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    ema = WeightEMA(model, DECAY)
    after = _sgd_steps(model, ema, 3)
    expected = _by_hand(after, DECAY)
    averaged = ema.model.state_dict()
    for key in expected:
        torch.testing.assert_close(averaged[key].double(), expected[key], rtol=1e-6, atol=1e-7)
        assert not torch.allclose(averaged[key].double(), after[-1][key], atol=1e-4), key  # not the raw weights
    assert int(ema.averaged.n_averaged) == 3
    # the end of training puts the average into the model: that is what the run writes
    _assert_equal(model.state_dict(), averaged)


def test_batchnorm_statistics_are_averaged_and_its_step_count_copied():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    ema = WeightEMA(model, DECAY)
    after = _sgd_steps(model, ema, 3, seed=2)
    expected = _by_hand(after, DECAY)
    averaged = ema.model.state_dict()
    for key in ("1.running_mean", "1.running_var", "1.weight", "0.weight"):
        torch.testing.assert_close(averaged[key].double(), expected[key], rtol=1e-6, atol=1e-7)
        assert not torch.allclose(averaged[key].double(), after[-1][key], atol=1e-5), key
    assert int(averaged["1.num_batches_tracked"]) == 3  # a count: copied (averaging it would truncate to 1)


def test_a_batch_end_without_an_optimizer_step_leaves_the_average_alone():
    """Between the steps of gradient accumulation (or a step GradScaler skipped) nothing is averaged."""
    model = nn.Linear(3, 2)
    ema = WeightEMA(model, DECAY)
    _sgd_steps(model, ema, 2)
    before = {k: v.clone() for k, v in ema.averaged.state_dict().items()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    state = LoopState(model, optimizer, epochs=1, steps_per_epoch=2)
    ema.on_train_begin(state)
    with torch.no_grad():
        model.weight.add_(1.0)  # the weights moved, but no optimizer step was taken
    ema.on_batch_end(state, {"batch": 1})
    _assert_equal(ema.averaged.state_dict(), before)
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    ema.on_batch_end(state, {"batch": 2})
    assert int(ema.averaged.n_averaged) == 3


# --- what the loop does with it ---------------------------------------------------------------------------------

class _Batches:
    """A loader over fixed tensors, as the loop takes one."""

    device = torch.device("cpu")

    def __init__(self, x: torch.Tensor, y: torch.Tensor, size: int):
        self.x, self.y, self.size = x, y, size
        self.num_samples = len(x)

    def __len__(self) -> int:
        return -(-len(self.x) // self.size)

    def __iter__(self):
        for start in range(0, len(self.x), self.size):
            yield self.x[start:start + self.size], self.y[start:start + self.size]


def test_the_loop_validates_the_average_and_the_best_model_keeps_it():
    torch.manual_seed(3)
    x, y = torch.randn(64, 5), torch.randint(0, 3, (64,))
    model = nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.3)
    ema, history, best = WeightEMA(model, DECAY), History(), BestModel("val_loss", "min")
    validated, averages = [], []

    class Spy(Callback):
        def on_epoch_end(self, state, logs):
            averages.append({k: v.clone() for k, v in ema.model.state_dict().items()})
            raw = classify_validate(state.model, val, loss_fn)
            assert raw["val_loss"] != logs["val_loss"]  # the trained weights would have scored otherwise
            assert classify_validate(ema.model, val, loss_fn)["val_loss"] == logs["val_loss"]

    def validate(module, loader, loss):
        validated.append(module)
        return classify_validate(module, loader, loss)

    val, loss_fn = _Batches(x[:16], y[:16], 8), nn.CrossEntropyLoss()
    state = fit(model, _Batches(x, y, 16), val, optimizer, Schedule(None, False), loss_fn, 3,
                [ema, Spy(), history, best], validate=validate)
    assert validated == [ema.model] * 3
    assert int(ema.averaged.n_averaged) == 12  # 4 optimizer steps per epoch
    losses = [row["val_loss"] for row in history.rows]
    assert state.best_epoch == 1 + losses.index(min(losses))
    _assert_equal(model.state_dict(), averages[state.best_epoch - 1])  # the best epoch's average, not raw weights


SMALL = dict(data="digits", model="tiny-cnn", epochs=2, batch_size=64, seed=3, threads=1, quiet=True)


class _Record(Callback):
    """The average and the trained weights at each epoch's end."""

    def __init__(self):
        self.averages, self.trained = {}, {}

    def on_epoch_end(self, state, logs):
        self.averages[state.epoch] = {k: v.detach().clone() for k, v in state.kept_model.state_dict().items()}
        self.trained[state.epoch] = {k: v.detach().clone() for k, v in state.plain_model.state_dict().items()}


def test_a_run_writes_the_average_of_its_best_epoch_as_its_model(tmp_path):
    record, console = _Record(), Console(file=io.StringIO(), width=300)
    run = convlab.train(out=str(tmp_path / "run"), ema=DECAY, callbacks=[record], console=console, **SMALL)
    said = console.file.getvalue()
    assert "note: --ema 0.9: validation, the best epoch, early stopping and the saved model use the moving average" \
           in said
    best = run.metrics["best_epoch"]
    saved = _tensors(run.path / WEIGHTS)
    _assert_equal(saved, record.averages[best])
    assert _differs(saved, record.trained[best])
    _assert_equal(_tensors(run.path / CHECKPOINTS / "best.safetensors"), saved)
    _assert_equal(_averaged_in_last(run.path), record.averages[2])  # the last checkpoint holds the average
    _assert_equal(load_checkpoint(run.path / CHECKPOINTS / LAST)["model"], record.trained[2])  # and the raw weights


def test_without_a_validation_split_the_run_writes_the_last_average(tmp_path):
    run = convlab.train(out=str(tmp_path / "run"), ema=DECAY, val_fraction=0.0, **SMALL)
    saved = _tensors(run.path / WEIGHTS)
    _assert_equal(saved, _averaged_in_last(run.path))
    assert _differs(saved, load_checkpoint(run.path / CHECKPOINTS / LAST)["model"])


# --- resume ----------------------------------------------------------------------------------------------------

class _CtrlC(Callback):
    """A SIGINT at one batch of one epoch (batch 0: at the epoch's end), as Ctrl-C would send."""

    def __init__(self, epoch: int, batch: int):
        self.epoch, self.batch = epoch, batch

    def on_batch_end(self, state, logs):
        if state.epoch == self.epoch and logs["batch"] == self.batch:
            signal.raise_signal(signal.SIGINT)

    def on_epoch_end(self, state, logs):
        if state.epoch == self.epoch and self.batch == 0:
            signal.raise_signal(signal.SIGINT)


RESUMED = dict(SMALL, epochs=3, augment="light", dropout=0.2, schedule="onecycle", deterministic=True, ema=DECAY)


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The uninterrupted run."""
    return convlab.train(out=str(tmp_path_factory.mktemp("ema") / "straight"), **RESUMED)


@pytest.mark.parametrize("epoch, batch", [(1, 0), (2, 5)], ids=["at-an-epoch-end", "inside-an-epoch"])
def test_a_stopped_and_resumed_run_is_bit_identical_to_the_straight_one(straight, tmp_path, epoch, batch):
    with pytest.raises(TrainingInterrupted):
        convlab.train(out=str(tmp_path / "cut"), callbacks=[_CtrlC(epoch, batch)], **RESUMED)
    resumed = convlab.train(resume=str(tmp_path / "cut"), quiet=True)
    _assert_equal(_tensors(resumed.path / WEIGHTS), _tensors(straight.path / WEIGHTS))
    _assert_equal(_averaged_in_last(resumed.path), _averaged_in_last(straight.path))
    rows = [(run.path / "metrics.csv").read_text().splitlines() for run in (resumed, straight)]
    assert [r.split(",")[:6] for r in rows[0]] == [r.split(",")[:6] for r in rows[1]]  # the EMA's val metrics too


# --- a fine-tune on cached features ------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_finetune_on_cached_features_averages_as_one_on_full_passes(digits_run, tmp_path):
    """The head trains on cached backbone features; its average is validated on them too."""
    common = dict(data="digits", classes="0,1,2", train_per_class=12, epochs=3, batch_size=8, strategy="linear-probe",
                  ema=DECAY, val_fraction=0.25)
    runs, said = [], []
    for name, extra in (("cached", {}), ("full", {"no_feature_cache": True})):
        console = Console(file=io.StringIO(), width=300)
        runs.append(convlab.finetune(str(digits_run.path), out=str(tmp_path / name), console=console, **common,
                                     **extra))
        said.append(console.file.getvalue())
    assert "features: stage 1 trains the head on cached backbone features" in said[0]
    assert "features: not cached (--no-feature-cache)" in said[1]
    cached, full = (_tensors(run.path / WEIGHTS) for run in runs)
    for key in cached:
        torch.testing.assert_close(cached[key], full[key], rtol=1e-5, atol=1e-6, msg=key)
    rows = [[line.split(",")[:5] for line in (run.path / "metrics.csv").read_text().splitlines()[1:]] for run in runs]
    for a, b in zip(*rows):
        assert [float(v) for v in a] == pytest.approx([float(v) for v in b], rel=1e-5)  # the averages' val metrics
    assert _differs(cached, load_checkpoint(runs[0].path / CHECKPOINTS / LAST)["model"])


def test_a_pruned_finetune_of_an_ema_run_averages_weights_that_stay_pruned(tmp_path):
    """prune's fine-tune keeps the source run's --ema; the average is taken after the masks zero the pruned weights."""
    from convlab.compress import prune_run
    from convlab.compress.measure import weight_sparsity

    source = convlab.train(out=str(tmp_path / "source"), ema=DECAY, **dict(SMALL, epochs=1))
    console = Console(file=io.StringIO(), width=300)
    pruned = prune_run(source.path, tmp_path / "pruned", amount=0.5, finetune_epochs=1, console=console,
                       latency_seconds=0.01)
    assert "note: --ema 0.9" in console.file.getvalue()
    assert weight_sparsity(convlab.load_run(pruned.path).model) == pytest.approx(0.5, abs=0.01)


# --- every task ---------------------------------------------------------------------------------------------------

def _masks(tmp_path) -> dict:
    from convlab.segmentation.synthetic import make_shape_masks

    make_shape_masks(tmp_path / "data", 16, 4, seed=3)
    return dict(data=f"masks:{tmp_path / 'data'}", model="tiny-unet", image_size=64, optimizer="adam", lr=1e-3,
                schedule="none", batch_size=8, val_fraction=0.25)


def _boxes(tmp_path) -> dict:
    (tmp_path / "home").mkdir()
    return dict(data="shapes", data_dir=str(tmp_path / "home"), model="tiny-detector")


@pytest.mark.slow
@pytest.mark.parametrize("task, settings, monitor", [("segment", _masks, "val_miou"), ("detect", _boxes, "val_map")],
                         ids=["segment", "detect"])
def test_segmentation_and_detection_runs_validate_and_write_the_average(tmp_path, task, settings, monitor):
    record = _Record()
    run = convlab.train(epochs=2, quiet=True, threads=1, ema=DECAY, out=str(tmp_path / "run"), callbacks=[record],
                        **settings(tmp_path))
    assert run.config.data.task == task
    saved = _tensors(run.path / WEIGHTS)
    _assert_equal(saved, record.averages[run.metrics["best_epoch"]])
    assert _differs(saved, record.trained[run.metrics["best_epoch"]])
    assert monitor in (run.path / "metrics.csv").read_text().splitlines()[0]


# --- values refused ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["1.5", "1", "-0.1"])
def test_a_decay_outside_0_to_1_is_a_one_line_error(capsys, tmp_path, value):
    code, _, err = run_cli(capsys, "train", "--ema", value, "--out", str(tmp_path / "run"))
    assert_one_line_error(code, err, "--ema")
    assert not (tmp_path / "run").exists()


def test_the_scratch_engine_refuses_ema_by_name(capsys, tmp_path):
    code, _, err = run_cli(capsys, "train", "--engine", "scratch", "--ema", "0.99", "--out", str(tmp_path / "run"))
    assert_one_line_error(code, err, "--ema 0.99", "--engine torch")


# --- torchrun ------------------------------------------------------------------------------------------------------

RANKS_SCRIPT = """
import json, os, sys
import convlab
from convlab.training.callbacks import Callback

class Spy(Callback):
    def on_epoch_end(self, state, logs):
        with open(f"val-{os.environ['RANK']}.jsonl", "a") as out:
            out.write(json.dumps([logs["val_loss"], logs["val_accuracy"]]) + "\\n")

convlab.train(data="digits", model="resnet8", epochs=2, batch_size=64, ema=0.9, early_stop=1, threads=1, quiet=True,
              out="run", callbacks=[Spy()])
"""


@pytest.mark.slow  # two torchrun processes
@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                    reason="this torch build has no gloo backend")
def test_under_torchrun_every_rank_validates_the_same_average_and_rank_0_writes_it(tmp_path):
    """BatchNorm statistics differ between the ranks' shards: the average's are rank 0's before validation, so
    the ranks agree on every metric (and early stopping stops them together)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    (tmp_path / "ranks.py").write_text(RANKS_SCRIPT)
    src = Path(__file__).resolve().parents[2] / "src"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", "CONVLAB_HOME": str(tmp_path / "home")}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "ranks.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "val-0.jsonl").read_text() == (tmp_path / "val-1.jsonl").read_text()
    run = tmp_path / "run"
    best = json.loads((run / "metrics.json").read_text())["best_epoch"]
    assert best >= 1
    _assert_equal(_tensors(run / WEIGHTS), _tensors(run / CHECKPOINTS / "best.safetensors"))
    assert _differs(_tensors(run / WEIGHTS), load_checkpoint(run / CHECKPOINTS / LAST)["model"])
