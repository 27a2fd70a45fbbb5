"""convlab tune: the --param syntax, per-epoch pruning, and a study that resumes from its SQLite file."""
from __future__ import annotations

import pytest
import yaml

from convlab.cli import main
from convlab.errors import ConvlabError
from convlab.insight.tune import Param, ReportToTrial, parse_param, parse_space

optuna = pytest.importorskip("optuna", reason="convlab tune needs optuna (pip install -e '.[tune]')")


@pytest.mark.parametrize("text, expected", [
    ("lr=1e-4:1e-1:log", Param("lr", low=1e-4, high=1e-1, log=True)),
    ("epochs=2:8", Param("epochs", low=2, high=8)),
    ("batch_size=32,64,128", Param("batch_size", values=(32, 64, 128))),
    ("optimizer=sgd,adam", Param("optimizer", values=("sgd", "adam"))),
    ("weight-decay=0,1e-4", Param("weight_decay", values=(0.0, 1e-4))),
])
def test_param_syntax(text, expected):
    assert parse_param(text) == expected


@pytest.mark.parametrize("text, message", [
    ("lrate=1e-3,1e-2", r"--param lrate=1e-3,1e-2: unknown setting 'lrate'. Did you mean 'lr'\?"),
    ("optimizer=sgd,rmsprop", r"invalid value for --param optimizer=sgd,rmsprop: optimizer: 'rmsprop'; "
                              r"choose from sgd, adam, adamw"),
    ("batch_size=32,big", r"--param batch_size=32,big: 'big' is not a whole number"),
    ("lr=0.1:0.01", r"LOW \(0.1\) must be below HIGH \(0.01\)"),
    ("lr=0:1:log", r"must be > 0.0"),
    ("optimizer=sgd:adam", r"'optimizer' is not numeric, so it takes a list: optimizer=sgd,adam,adamw"),
    ("data=digits,mnist", r"'data' cannot be searched"),
    ("lr", r"expected NAME=LOW:HIGH\[:log\] or NAME=A,B,C"),
])
def test_bad_params_are_named(text, message):
    with pytest.raises(ConvlabError, match=message):
        parse_param(text)


def test_grid_needs_lists():
    with pytest.raises(ConvlabError, match=r"--search grid needs lists of values, got the range lr=0.0001:0.1:log"):
        parse_space(["lr=1e-4:1e-1:log"], "grid")
    with pytest.raises(ConvlabError, match=r"--param lr is given twice"):
        parse_space(["lr=1e-3,1e-2", "lr=1e-1,1"], "tpe")


def test_report_to_trial_prunes_after_the_epoch():
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=0.9))
    trial = study.ask()
    callback = ReportToTrial(trial)

    class State:
        epoch = 1

    with pytest.raises(optuna.TrialPruned, match="validation accuracy 0.5000 after epoch 1"):
        callback.on_epoch_end(State(), {"val_accuracy": 0.5})
    assert trial.storage.get_trial(trial._trial_id).intermediate_values == {1: 0.5}


@pytest.mark.slow
def test_study_resumes_from_its_sqlite_file_and_writes_a_trainable_config(tmp_path, capsys):
    study_dir = tmp_path / "study"
    common = ["--data", "digits", "--model", "tiny-cnn", "--epochs", "1", "--search", "grid",
              "--param", "lr=0.001,0.003", "--param", "batch_size=32,64", "--out", str(study_dir)]
    assert main(["tune", "--trials", "1", *common]) == 0
    assert (study_dir / "study.db").is_file()
    first = sorted(p.name for p in (study_dir / "trials").iterdir())
    assert first == ["trial-0000"]

    assert main(["tune", "--trials", "2", *common]) == 0  # the same command, one more trial: it continues
    out = capsys.readouterr().out
    assert "1 finished trials; 1 to go" in out
    study = optuna.load_study(study_name="convlab", storage=f"sqlite:///{study_dir / 'study.db'}")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    assert len({tuple(sorted(t.params.items())) for t in study.trials}) == 2  # two different grid points
    assert sorted(p.name for p in (study_dir / "trials").iterdir()) == ["trial-0000", "trial-0001"]
    assert (study_dir / "search.png").stat().st_size > 5_000

    best = study.best_trial
    saved = yaml.safe_load((study_dir / "best.yaml").read_text())
    assert saved["optim"]["lr"] == best.params["lr"] and saved["train"]["batch_size"] == best.params["batch_size"]
    assert saved["model"]["name"] == "tiny-cnn" and saved["train"]["epochs"] == 1
    run_dir = tmp_path / "from-best"
    assert main(["train", "--config", str(study_dir / "best.yaml"), "--quiet", "--out", str(run_dir)]) == 0
    trained = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert trained["optim"]["lr"] == best.params["lr"]

    # Another search space in the same folder is refused rather than mixed in.
    with pytest.raises(ConvlabError, match=r"holds a study with another space"):
        from convlab.insight.tune import tune

        tune(study_dir, ["lr=0.01,0.1"], trials=3, search="grid", data="digits", model="tiny-cnn", epochs=1)


@pytest.mark.slow
def test_a_trial_left_running_by_a_killed_process_is_marked_failed(tmp_path):
    from convlab.insight.tune import tune

    study_dir = tmp_path / "study"
    study_dir.mkdir()
    killed = optuna.create_study(study_name="convlab", storage=f"sqlite:///{study_dir / 'study.db'}",
                                 direction="maximize")
    killed.ask()  # started, never told: what a killed `convlab tune` leaves behind
    result = tune(study_dir, ["lr=0.001,0.003"], trials=1, search="random", data="digits", model="tiny-cnn",
                  epochs=1)
    assert [t.state.name for t in result.study.trials] == ["FAIL", "COMPLETE"]
    assert result.new_trials == 1 and result.best_config.is_file()
