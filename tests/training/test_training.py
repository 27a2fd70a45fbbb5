"""Training behaviour: learning, seeded reproducibility, early stopping, best-epoch restore."""
import json

import pytest
import torch

from convlab import train
from convlab.training.callbacks import BestModel, EarlyStopping
from convlab.training.loop import LoopState


def metrics_without_time(run):
    return {k: v for k, v in run.metrics.items() if k not in ("train_seconds", "test_seconds")}


@pytest.mark.slow
def test_same_seed_same_metrics_and_weights(tmp_path):
    a = train(data="digits", model="tiny-cnn", epochs=2, seed=5, out=str(tmp_path / "a"), quiet=True)
    b = train(data="digits", model="tiny-cnn", epochs=2, seed=5, out=str(tmp_path / "b"), quiet=True)
    c = train(data="digits", model="tiny-cnn", epochs=2, seed=6, out=str(tmp_path / "c"), quiet=True)
    assert metrics_without_time(a) == metrics_without_time(b)
    for (name, wa), wb in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(wa, wb), name
    assert not torch.equal(a.model.state_dict()["features.0.weight"], c.model.state_dict()["features.0.weight"])
    rows_a = (tmp_path / "a" / "metrics.csv").read_text().splitlines()
    rows_b = (tmp_path / "b" / "metrics.csv").read_text().splitlines()
    strip = lambda rows: [",".join(r.split(",")[:6]) for r in rows]  # drop the timing columns
    assert strip(rows_a) == strip(rows_b)


@pytest.mark.slow
def test_default_recipe_learns_digits(tmp_path):
    run = train(out=str(tmp_path / "run"), quiet=True, epochs=8)
    assert run.config.model.name == "small-cnn"  # from the digits recipe
    assert run.metrics["accuracy"] >= 0.93


def test_early_stopping_after_patience(tmp_path):
    stopper = EarlyStopping(patience=2)
    state = LoopState(model=None, optimizer=None, epochs=10, steps_per_epoch=1)
    for epoch, acc in enumerate([0.5, 0.6, 0.6, 0.55], start=1):
        state.epoch = epoch
        stopper.on_epoch_end(state, {"val_accuracy": acc})
    assert state.stop and state.stopped_early


def test_best_model_restores_best_epoch():
    model = torch.nn.Linear(2, 2)
    state = LoopState(model=model, optimizer=None, epochs=3, steps_per_epoch=1)
    best = BestModel()
    for epoch, acc in enumerate([0.2, 0.9, 0.5], start=1):
        state.epoch = epoch
        with torch.no_grad():
            model.weight.fill_(epoch)
        best.on_epoch_end(state, {"val_accuracy": acc})
    best.on_train_end(state)
    assert state.best_epoch == 2
    assert torch.all(model.weight == 2)


def test_early_stop_ends_a_real_run(tmp_path):
    run = train(data="digits", model="tiny-cnn", epochs=30, lr=1e-5, schedule="none", early_stop=1,
                out=str(tmp_path / "run"), quiet=True)
    assert run.metrics["epochs_run"] < 30


@pytest.mark.parametrize("optimizer, schedule", [("sgd", "step"), ("adamw", "cosine"), ("adam", "none")])
def test_optimizers_and_schedules_train(tmp_path, optimizer, schedule):
    run = train(data="digits", model="tiny-cnn", epochs=2, optimizer=optimizer, schedule=schedule,
                lr=0.05 if optimizer == "sgd" else 3e-3, out=str(tmp_path / "r"), quiet=True,
                label_smoothing=0.1, dropout=0.2, augment="light")
    rows = (tmp_path / "r" / "metrics.csv").read_text().splitlines()
    assert len(rows) == 3
    assert run.metrics["accuracy"] > 0.5
    saved = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert saved["accuracy"] == run.metrics["accuracy"]


@pytest.mark.parametrize("mode, values, best_epoch", [("max", [0.2, 0.9, 0.5], 2), ("min", [0.9, 0.2, 0.5], 2),
                                                      ("min", [0.3, 0.4, 0.1], 3)])
def test_best_model_follows_the_monitor_and_its_direction(mode, values, best_epoch):
    model = torch.nn.Linear(2, 2)
    state = LoopState(model=model, optimizer=None, epochs=3, steps_per_epoch=1)
    best = BestModel(monitor="val_loss", mode=mode)
    for epoch, value in enumerate(values, start=1):
        state.epoch = epoch
        with torch.no_grad():
            model.weight.fill_(epoch)
        best.on_epoch_end(state, {"val_loss": value, "val_accuracy": 1.0 - epoch})  # val_accuracy is not watched
    best.on_train_end(state)
    assert state.best_epoch == best_epoch and torch.all(model.weight == best_epoch)


def test_early_stopping_on_a_loss_stops_when_it_stops_falling():
    stopper = EarlyStopping(patience=2, monitor="val_loss", mode="min")
    state = LoopState(model=None, optimizer=None, epochs=10, steps_per_epoch=1)
    for epoch, loss in enumerate([1.0, 0.8, 0.7, 0.75, 0.72], start=1):
        assert not state.stop
        state.epoch = epoch
        stopper.on_epoch_end(state, {"val_loss": loss})
    assert state.stop and stopper.best == 0.7


def test_monitor_refuses_an_unknown_direction():
    from convlab.training.callbacks import MonitorCallback

    with pytest.raises(ValueError, match="mode must be one of max, min, got 'up'"):
        MonitorCallback("val_loss", "up")


def test_best_weights_of_a_compiled_model_keep_their_plain_names():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2))
    state = LoopState(model=torch.compile(model), optimizer=None, epochs=1, steps_per_epoch=1)  # not called: no build
    state.epoch = 1
    best = BestModel()
    best.on_epoch_end(state, {"val_accuracy": 0.5})
    assert set(best.best_state) == {"0.weight", "0.bias"}


def test_the_pipeline_finds_its_callbacks_by_type_not_by_place(tmp_path, monkeypatch):
    """A callback appended after the checkpointer must not be taken for it."""
    from convlab import pipeline
    from convlab.training.callbacks import Callback

    made = pipeline.make_callbacks

    def with_one_more(*args, **kwargs):
        callbacks, history = made(*args, **kwargs)
        return [*callbacks, Callback()], history

    monkeypatch.setattr(pipeline, "make_callbacks", with_one_more)
    run = train(data="digits", model="tiny-cnn", epochs=1, threads=1, out=str(tmp_path / "r"), quiet=True)
    assert run.metrics["epochs_run"] == 1


def test_the_epoch_line_shows_slow_rates_with_two_digits_not_as_zero():
    from convlab.training.callbacks import rate

    assert [rate(v) for v in (0.3412, 3.456, 9.99, 10.4, 13836.2)] == ["0.34", "3.5", "10", "10", "13,836"]
