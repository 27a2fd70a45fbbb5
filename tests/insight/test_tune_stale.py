"""convlab tune with a shared storage: a worker that dies near the target does not leave the study short."""
from __future__ import annotations

import threading
import time

import pytest

from convlab.insight.tune import tune

optuna = pytest.importorskip("optuna", reason="convlab tune needs optuna (pip install -e '.[tune]')")


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")  # heartbeats, as tune.py uses them
@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed")  # the stand-in worker asks by hand
def test_a_trial_whose_worker_dies_near_the_target_is_run_again_and_the_study_reaches_it(tmp_path):
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    storage = optuna.storages.RDBStorage(url, heartbeat_interval=1, grace_period=2)
    other = optuna.create_study(study_name="convlab", storage=storage, direction="maximize")
    dead = other.ask({"lr": optuna.distributions.CategoricalDistribution([0.001, 0.003])})

    def other_worker():
        """Beats for its trial until this worker has finished one, then dies without a word."""
        while not any(t.state.name == "COMPLETE" for t in other.get_trials(deepcopy=False)):
            storage.record_heartbeat(dead._trial_id)
            time.sleep(0.1)

    beating = threading.Thread(target=other_worker, daemon=True)
    beating.start()
    result = tune(tmp_path / "study", ["lr=0.001,0.003"], trials=2, search="random", storage=url, heartbeat=1,
                  data="digits", model="tiny-cnn", epochs=1, threads=1)
    beating.join(timeout=10)
    trials = result.study.trials
    assert [t.state.name for t in trials].count("COMPLETE") == 2, [(t.number, t.state.name) for t in trials]
    assert trials[0].state.name == "FAIL"  # the dead worker's trial, failed once its heartbeat went stale
    retried = [t for t in trials if t.system_attrs.get("failed_trial") == dead.number]
    assert [t.state.name for t in retried] == ["COMPLETE"] and retried[0].params == dead.params
