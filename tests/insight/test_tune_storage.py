"""convlab tune --storage: workers sharing one study in a real PostgreSQL server; a worker killed mid-trial."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from convlab.cli import main
from convlab.errors import ConvlabError
from postgres import postgres_server

optuna = pytest.importorskip("optuna", reason="convlab tune needs optuna (pip install -e '.[tune]')")
pytest.importorskip("psycopg", reason="PostgreSQL storage needs psycopg (pip install -e '.[tune]')")

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"
TRIAL = ["--search", "random", "--param", "lr=1e-3:1e-2:log", "--data", "digits", "--model", "tiny-cnn",
         "--threads", "1", "--device", "cpu"]


@pytest.fixture(scope="module")
def database():
    with postgres_server() as url:
        yield url


def worker(tmp_path: Path, out: str, *args: str) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", CONVLAB_HOME=str(tmp_path / "home"), PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]))
    return subprocess.Popen([sys.executable, "-m", "convlab", "tune", "--out", str(tmp_path / out), *args],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def trial_lines(stdout: str) -> list[int]:
    """The numbers of the trials a worker ran (its `trial N: ... -> val_acc` lines)."""
    return [int(n) for n in re.findall(r"^trial (\d+): .* -> val_acc", stdout, flags=re.M)]


def finished(study) -> list:
    return [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]


@pytest.mark.slow
def test_two_workers_share_one_study_without_running_a_trial_twice(database, tmp_path):
    args = ["--storage", database, "--study", "two-workers", "--trials", "4", "--epochs", "1", *TRIAL]
    workers = [worker(tmp_path, name, *args) for name in ("machine-a", "machine-b")]
    outputs = [w.communicate(timeout=300) for w in workers]
    for w, (stdout, stderr) in zip(workers, outputs):
        assert w.returncode == 0, stderr[-3000:]
    study = optuna.load_study(study_name="two-workers", storage=database)
    done = finished(study)
    assert len(done) == 4, [(t.number, t.state.name) for t in study.trials]
    ran = [trial_lines(stdout) for stdout, _ in outputs]
    assert all(ran), f"each worker should have run trials: {ran}"
    assert sorted(ran[0] + ran[1]) == sorted(t.number for t in done)  # each trial ran in one worker only
    assert len({t.params["lr"] for t in done}) == 4  # and with its own value
    for t in done:  # a pruned trial stops before its model is written
        assert (Path(t.user_attrs["run_dir"]) / "model.safetensors").is_file() == (t.state.name == "COMPLETE")


@pytest.mark.slow
def test_a_worker_killed_mid_trial_has_its_trial_failed_and_run_again(database, tmp_path):
    heartbeat = 1
    args = ["--storage", database, "--study", "killed", "--trials", "2", "--epochs", "2", "--heartbeat",
            str(heartbeat), *TRIAL]
    doomed = worker(tmp_path, "machine-a", *args)
    checkpoint = tmp_path / "machine-a" / "trials" / "trial-0000" / "checkpoints" / "last.safetensors"
    while not checkpoint.is_file():  # the trial has started training
        assert doomed.poll() is None, doomed.communicate()[1][-3000:]
        time.sleep(0.02)
    doomed.send_signal(signal.SIGKILL)
    doomed.communicate(timeout=60)
    killed = optuna.load_study(study_name="killed", storage=database).trials[0]
    assert killed.state.name == "RUNNING"  # as the dead worker left it
    time.sleep(2 * heartbeat + 0.5)  # past the grace period: its heartbeat is stale

    survivor = worker(tmp_path, "machine-b", *args)
    stdout, stderr = survivor.communicate(timeout=300)
    assert survivor.returncode == 0, stderr[-3000:]
    study = optuna.load_study(study_name="killed", storage=database)
    assert study.trials[0].state.name == "FAIL"
    retried = [t for t in study.trials if t.system_attrs.get("failed_trial") == 0]  # the copy Optuna queued
    assert len(retried) == 1 and retried[0].state.name in ("COMPLETE", "PRUNED")
    assert retried[0].params == killed.params
    assert len(finished(study)) == 2
    assert retried[0].number in trial_lines(stdout)


def test_a_bad_storage_url_is_named(tmp_path):
    from convlab.insight.tune import tune

    with pytest.raises(ConvlabError, match=r"--storage 'no-such-scheme' is not a database URL"):
        tune(tmp_path / "s", ["lr=1e-3,1e-2"], trials=1, storage="no-such-scheme")
    with pytest.raises(ConvlabError, match=r"--storage postgresql://u:\*\*\*@127\.0\.0\.1:1/db: cannot "
                                           r"open the database"):
        tune(tmp_path / "s", ["lr=1e-3,1e-2"], trials=1, storage="postgresql://u:secret@127.0.0.1:1/db")


def documented_url() -> str:
    """The --storage URL of docs/insight.md's multi-machine command."""
    return re.search(r"--storage (postgresql://\S+)", (ROOT / "docs" / "insight.md").read_text()).group(1)


def test_the_tune_extra_installs_the_driver_sqlalchemy_picks_for_the_documented_url():
    import tomllib
    from importlib.metadata import packages_distributions

    from packaging.requirements import Requirement
    from sqlalchemy.engine import make_url

    driver = make_url(documented_url()).get_dialect().import_dbapi().__name__  # what `postgresql://` loads
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["tune"]
    installed_by_extra = {Requirement(text).name.lower() for text in extra}
    assert {name.lower() for name in packages_distributions()[driver]} & installed_by_extra, (driver, extra)


@pytest.mark.slow
def test_tune_runs_with_the_storage_url_as_documented(database, tmp_path, capsys):
    """The URL the server fixture gives is written as docs/insight.md writes it: postgresql://USER@HOST/DB."""
    assert database.startswith("postgresql://") and documented_url().startswith("postgresql://")
    code = main(["tune", "--out", str(tmp_path / "study"), "--storage", database, "--study", "as-documented",
                 "--trials", "1", "--epochs", "1", *TRIAL])
    assert code == 0, capsys.readouterr().err
    study = optuna.load_study(study_name="as-documented", storage=database)
    assert [t.state.name for t in study.trials] == ["COMPLETE"]
