"""Hyperparameter search with Optuna: a resumable study of training runs, pruned per epoch.

STUDY_DIR holds study.db (the Optuna study, unless --storage names another database), trials/trial-NNNN/
(each trial's run folder), search.png (the search at a glance) and best.yaml (the best trial's config,
for `convlab train --config`). With --storage URL (any Optuna RDB storage: postgresql://, mysql://,
sqlite://) several workers, on one machine or many, share one study: each trial is asked from the
database, so no two workers run the same trial. Every running trial beats a heartbeat into the
database; a worker that dies stops beating, and the next worker to look marks its trial failed and
queues a copy (Optuna's RetryHeartbeatStaleTrialCallback, formerly RetryFailedTrialCallback) that some
worker then runs.
"""
from __future__ import annotations

import contextlib
import difflib
import io
import logging
import math
import time
import types
import typing
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from rich.console import Console

from .. import config as cfg
from ..errors import ConvlabError
from ..evaluate.plots import new_figure
from ..pipeline import recipe_for, train
from ..tasks import task_of
from ..training.callbacks import Callback

SEARCHES = ("grid", "random", "tpe")
# Settings that define the problem or the machine, not the model: searching them makes no sense.
NOT_TUNABLE = {"data", "data_dir", "val_fraction", "device", "out", "quiet", "tensorboard", "deterministic",
               "strict", "checkpoint_every", "dist_timeout"}
STUDY_NAME = "convlab"
DB = "study.db"
RETRIES = 2  # how often a trial whose worker died is run again


def _require_optuna():
    try:
        import optuna
    except ImportError:
        raise ConvlabError("convlab tune needs Optuna, which is not installed; run pip install -e '.[tune]' in the "
                           "convlab folder (or pip install optuna)") from None
    return optuna


# -- the search space --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Param:
    """One searched setting: a list of values (any search) or a numeric range low:high[:log] (random, tpe)."""

    key: str
    values: tuple | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False

    @property
    def is_range(self) -> bool:
        return self.values is None

    def suggest(self, trial) -> Any:
        if not self.is_range:
            return trial.suggest_categorical(self.key, list(self.values))
        if _base_type(self.key) is int:
            return trial.suggest_int(self.key, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(self.key, self.low, self.high, log=self.log)

    def text(self) -> str:
        if self.is_range:
            return f"{self.key}={self.low}:{self.high}" + (":log" if self.log else "")
        return f"{self.key}=" + ",".join(str(v) for v in self.values)


def _base_type(key: str):
    kind = cfg.field_type(key)
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        kind = next(t for t in typing.get_args(kind) if t is not type(None))
    return str if typing.get_origin(kind) is Literal else kind


def _parse_value(key: str, token: str, text: str) -> Any:
    kind = _base_type(key)
    token = token.strip()
    try:
        if kind is int:
            value: Any = int(token)
        elif kind is float:
            value = float(token)
        elif kind is bool:
            if token.lower() not in ("true", "false"):
                raise ValueError
            value = token.lower() == "true"
        else:
            value = token
    except ValueError:
        what = {int: "a whole number", float: "a number", bool: "true or false"}[kind]
        raise ConvlabError(f"--param {text}: {token!r} is not {what}") from None
    return cfg.coerce(key, value, f"--param {text}")  # choices and limits of the config field


def parse_param(text: str) -> Param:
    """'lr=1e-4:1e-1:log', 'epochs=2:8', 'batch_size=32,64,128', 'optimizer=sgd,adam' -> Param."""
    key, sep, spec = text.partition("=")
    key = key.strip().replace("-", "_")
    if not sep or not spec.strip():
        raise ConvlabError(f"--param {text!r}: expected NAME=LOW:HIGH[:log] or NAME=A,B,C "
                           f"(e.g. lr=1e-4:1e-1:log or batch_size=32,64,128)")
    train_keys = [k for k, (section, _) in cfg.FLAT_KEYS.items() if section in cfg.TRAIN_SECTIONS]
    if key not in train_keys:
        close = difflib.get_close_matches(key, train_keys, n=5, cutoff=0.5)
        close.sort(key=lambda name: name[0] != key[0])  # a typo seldom changes the first letter (lrate: lr)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ConvlabError(f"--param {text}: unknown setting '{key}'.{hint} Settings are the flags of "
                           f"'convlab train --help' with _ for -")
    if key in NOT_TUNABLE:
        raise ConvlabError(f"--param {text}: '{key}' cannot be searched; pass it as a plain flag instead")
    if ":" in spec:
        parts = spec.split(":")
        log = len(parts) == 3 and parts[2].strip() == "log"
        if len(parts) not in (2, 3) or (len(parts) == 3 and not log):
            raise ConvlabError(f"--param {text}: a range is LOW:HIGH or LOW:HIGH:log")
        if _base_type(key) not in (int, float):
            raise ConvlabError(f"--param {text}: '{key}' is not numeric, so it takes a list: "
                               f"{key}={','.join(cfg.choices(key) or ('A', 'B'))}")
        low, high = (_parse_value(key, p, text) for p in parts[:2])
        if not low < high:
            raise ConvlabError(f"--param {text}: LOW ({low}) must be below HIGH ({high})")
        if log and low <= 0:
            raise ConvlabError(f"--param {text}: a log range needs LOW > 0, got {low}")
        return Param(key, low=low, high=high, log=log)
    values = tuple(dict.fromkeys(_parse_value(key, token, text) for token in spec.split(",")))
    return Param(key, values=values)


def parse_space(texts: list[str], search: str) -> list[Param]:
    if search not in SEARCHES:
        raise ConvlabError(f"--search {search!r}: choose from {', '.join(SEARCHES)}")
    if not texts:
        raise ConvlabError("convlab tune: give at least one --param (e.g. --param lr=1e-4:1e-1:log)")
    space = [parse_param(text) for text in texts]
    keys = [p.key for p in space]
    if len(set(keys)) != len(keys):
        twice = next(k for k in keys if keys.count(k) > 1)
        raise ConvlabError(f"--param {twice} is given twice; give each setting once")
    if search == "grid":
        ranged = [p.text() for p in space if p.is_range]
        if ranged:
            raise ConvlabError(f"--search grid needs lists of values, got the range {ranged[0]}; list the "
                               f"values (e.g. lr=1e-3,1e-2,1e-1) or use --search random or tpe")
    return space


# -- what trials are scored by -----------------------------------------------------------------------------
# metric -> (in sentences, in columns)
METRIC_WORDS = {"accuracy": ("accuracy", "acc"), "mean_ap": ("mean AP", "mean AP"), "map": ("mAP", "mAP"),
                "miou": ("mIoU", "mIoU")}


@dataclass(frozen=True)
class Objective:
    """The task's validation monitor (a trial's value is its best epoch's) and the test metric shown beside it."""

    monitor: str = "val_accuracy"
    mode: str = "max"
    test_metric: str = "accuracy"

    @classmethod
    def of(cls, base: dict) -> Objective:
        """The objective of the task the fixed settings `base` train (their data's, or --task's)."""
        task = task_of(cfg.resolve(base, recipe_for=recipe_for)[0])
        return cls(task.monitor, task.mode, task.test_metric)

    @property
    def words(self) -> str:
        """'validation accuracy', 'validation mAP'."""
        return f"validation {METRIC_WORDS.get(self.test_metric, (self.test_metric,))[0]}"

    @property
    def short(self) -> str:
        """'acc', 'mAP': the columns' and progress lines' name of the metric."""
        return METRIC_WORDS.get(self.test_metric, (None, self.test_metric))[1]

    def better(self, a: float, b: float) -> float:
        return max(a, b) if self.mode == "max" else min(a, b)


# -- pruning -----------------------------------------------------------------------------------------------
class ReportToTrial(Callback):
    """After each epoch: report the task's validation metric (val_accuracy, val_map, ...) to the Optuna trial and
    stop it if the pruner says so."""

    def __init__(self, trial, objective: Objective = Objective()):
        self.trial = trial
        self.objective = objective
        self.best: float | None = None
        self.epochs = 0

    def on_epoch_end(self, state, logs):
        import optuna

        value = logs.get(self.objective.monitor)
        if value is None:
            return
        self.best = value if self.best is None else self.objective.better(self.best, value)
        self.epochs = state.epoch
        self.trial.report(value, state.epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"{self.objective.words} {value:.4f} after epoch {state.epoch}")


# -- the study ---------------------------------------------------------------------------------------------
@dataclass
class TuneResult:
    study: Any  # optuna.Study
    study_dir: Path
    best_config: Path | None
    plot: Path | None
    new_trials: int


def _sampler(optuna, search: str, space: list[Param], seed: int | None):
    if search == "grid":
        return optuna.samplers.GridSampler({p.key: list(p.values) for p in space}, seed=seed)
    if search == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    # constant_liar: trials other workers are running count as poor results, so workers spread out
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=5, constant_liar=True)


def open_storage(optuna, url: str, heartbeat: int):
    """An Optuna RDB storage with heartbeats: a trial whose worker stops beating for 2 x `heartbeat`
    seconds is marked failed and queued again. Returns (storage, the URL to show, password hidden)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError

    try:
        shown = make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        raise ConvlabError(f"--storage {url!r} is not a database URL; use e.g. postgresql://USER@HOST/DB, "
                           f"mysql://USER@HOST/DB or sqlite:///FILE.db") from None
    with warnings.catch_warnings():  # heartbeats are marked experimental in Optuna; they are what we need
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # Optuna 4.9 renamed the retry callback and its keyword; older releases have only the first names.
        if hasattr(optuna.storages, "RetryHeartbeatStaleTrialCallback"):
            retry = {"heartbeat_stale_trial_callback": optuna.storages.RetryHeartbeatStaleTrialCallback(RETRIES)}
        else:
            retry = {"failed_trial_callback": optuna.storages.RetryFailedTrialCallback(RETRIES)}
    for attempt in range(3):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(url, heartbeat_interval=heartbeat, grace_period=2 * heartbeat,
                                                  **retry), shown
        except DBAPIError as err:
            # Workers started at once on a new database race to create its tables; the loser finds them made.
            if attempt < 2 and not err.connection_invalidated and "connect" not in str(err).lower():
                time.sleep(0.5)
                continue
            error = err
        except (SQLAlchemyError, ImportError, ValueError) as err:
            error = err
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConvlabError(f"--storage {shown}: cannot open the database ({reason}); check the URL, that the "
                           f"server runs and that its driver is installed (the tune extra has PostgreSQL's: "
                           f"pip install -e '.[tune]' in the convlab folder)") from None


def tune(study_dir: str | Path, params: list[str], trials: int = 20, search: str = "tpe",
         config: str | Path | None = None, console: Console | None = None, storage: str | None = None,
         study_name: str = STUDY_NAME, heartbeat: int = 30, **overrides) -> TuneResult:
    """Run (or continue) the study: train until it has `trials` finished trials, counting every worker's.

    `params` are --param texts; `overrides` are fixed settings (the flags of `convlab train`), applied
    after the YAML file `config`. Each trial's value is its best epoch's validation metric (the task's
    monitor: accuracy for a classifier, mAP for a detector). `storage` is a
    database URL shared by several workers (default: STUDY_DIR/study.db, this process alone); `heartbeat`
    is the seconds between a running trial's signs of life.
    """
    optuna = _require_optuna()
    console = console or Console(highlight=False, soft_wrap=True)
    if trials < 1:
        raise ConvlabError(f"--trials must be at least 1, got {trials}")
    space = parse_space(list(params), search)
    base = dict(cfg.read_config_file(config)) if config else {}
    base.update({k: cfg.coerce(k, v, "flags") for k, v in overrides.items() if v is not None})
    for key in ("out", "quiet", "tensorboard"):
        base.pop(key, None)
    searched = {p.key for p in space} & set(base)
    if searched:
        key = sorted(searched)[0]
        raise ConvlabError(f"--param {key}=... and a fixed {cfg.flag(key)} (or config file value) both given; "
                           f"keep one")
    if base.get("val_fraction", 0.1) <= 0:
        raise ConvlabError("convlab tune scores trials on the validation split; --val-fraction must be > 0")
    objective_of = Objective.of(base)

    study_dir = Path(study_dir).expanduser()
    try:
        (study_dir / "trials").mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConvlabError(f"cannot create the study folder {study_dir} ({err.strerror}); pass --out with a "
                           f"writable folder") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if heartbeat < 1:
        raise ConvlabError(f"--heartbeat must be at least 1 second, got {heartbeat}")
    shared = storage is not None
    rdb, where = open_storage(optuna, storage or f"sqlite:///{(study_dir / DB).resolve()}", heartbeat)
    where = f"{where} (study {study_name})" if shared else str(study_dir / DB)
    setup = {"search": search, "space": [p.text() for p in space], "fixed": {k: base[k] for k in sorted(base)}}
    seed: int | None = int(base.get("seed", 0))
    study = optuna.load_study(study_name=study_name, storage=rdb) if _has_study(optuna, rdb, study_name) else None
    if study is not None:
        _check_same_setup(study, setup, where)
        if not shared:  # the folder's own file has one worker: what is RUNNING was left by an interrupted run
            for stale in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
                study.tell(stale.number, state=optuna.trial.TrialState.FAIL)
    if shared and search != "grid":
        seed = None  # workers started at once would draw the same values from the same seed
    elif study is not None and search != "grid":  # a resumed sampler must not replay old draws; the grid
        seed += len(study.trials)  # sampler's seed fixes the order of grid points, so it must stay
    study = optuna.create_study(
        study_name=study_name, storage=rdb, load_if_exists=True,
        direction="maximize" if objective_of.mode == "max" else "minimize",
        sampler=_sampler(optuna, search, space, seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1))
    if not study.user_attrs.get("setup"):
        study.set_user_attr("setup", setup)

    target = trials
    if search == "grid":
        target = min(trials, math.prod(len(p.values) for p in space))
    finished, running = _progress(optuna, study)
    todo = max(0, target - finished - running)
    if finished or running:
        elsewhere = f", {running} running in other workers" if running else ""
        console.print(f"study {where}: {finished} finished trials{elsewhere}; {todo} to go (target {target})",
                      markup=False)

    quiet = _QuietStops()

    def objective(trial):
        try:
            return run_trial(trial)
        except (KeyboardInterrupt, SurplusTrial):
            quiet.numbers.add(trial.number)
            raise

    def run_trial(trial):
        _check_not_surplus(optuna, study, trial, target)
        settings = dict(base)
        settings.update({p.key: p.suggest(trial) for p in space})
        run_dir = study_dir / "trials" / f"trial-{trial.number:04d}"
        trial.set_user_attr("run_dir", str(run_dir))
        reporter = ReportToTrial(trial, objective_of)
        started = time.perf_counter()
        try:
            run = train(console=Console(file=io.StringIO()), callbacks=[reporter], out=str(run_dir), quiet=True,
                        **settings)
        finally:
            trial.set_user_attr("seconds", round(time.perf_counter() - started, 2))
            trial.set_user_attr("epochs_run", reporter.epochs)
        trial.set_user_attr(f"test_{objective_of.test_metric}", run.metrics[objective_of.test_metric])
        return reporter.best

    with _interrupt_says_rerun(optuna, study, where, quiet):
        _run_until_target(optuna, study, objective, target, console, space, heartbeat, objective_of)
    result = TuneResult(study, study_dir, None, None, todo)
    print_trials(console, study, space, objective_of)
    if _finished(optuna, study, complete_only=True):
        result.plot = plot_search(study, space, study_dir / "search.png", objective_of)
        result.best_config = write_best_config(study, base, study_dir / "best.yaml", objective_of)
        best = study.best_trial
        console.print(f"best: trial {best.number}, {objective_of.words} {best.value:.4f} "
                      f"({', '.join(f'{k}={_fmt(v)}' for k, v in best.params.items())})", markup=False)
        console.print(f"best config: {result.best_config}  (convlab train --config {result.best_config})",
                      markup=False)
        console.print(f"search plot: {result.plot}", markup=False)
    else:
        console.print("no trial has completed yet: no best config", markup=False)
    return result


class _QuietStops(logging.Filter):
    """Optuna logs each failed trial with its traceback. A trial stopped by Ctrl-C or standing down is no
    error (convlab says what happened in its own words), so its two lines are left out."""

    LOGGER = "optuna.study._optimize"  # the logger of Optuna's "Trial N failed ..." lines

    def __init__(self):
        super().__init__()
        self.numbers: set[int] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(record.getMessage().startswith(f"Trial {n} failed") for n in self.numbers)


@contextlib.contextmanager
def _interrupt_says_rerun(optuna, study, where: str, quiet: _QuietStops):
    """Ctrl-C fails the trial in progress (Optuna's lines about it left out); what continues the study is
    the same command, which the message says (not the trial's own `train --resume`)."""
    logging.getLogger(_QuietStops.LOGGER).addFilter(quiet)
    try:
        yield
    except KeyboardInterrupt:
        done = len(_finished(optuna, study))
        raise KeyboardInterrupt(f"the study in {where} keeps the trials finished so far ({done}); run the same "
                                f"command again to continue it") from None
    finally:
        logging.getLogger(_QuietStops.LOGGER).removeFilter(quiet)


class SurplusTrial(Exception):
    """Raised at the start of a trial the study no longer needs: it ends FAIL, untrained."""


def _check_not_surplus(optuna, study, trial, target: int) -> None:
    """Trial numbers come from the database in order, so "finished trials plus running ones with a smaller
    number reach the target" is a test every worker agrees on: of two workers that start a trial at the
    same moment for the last place, the one with the larger number stands down."""
    finished, _ = _progress(optuna, study)  # a dead worker's trial is failed first: it no longer counts
    earlier = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
               if t.number < trial.number]
    if finished + len(earlier) >= target:
        trial.set_user_attr("surplus", True)
        study.stop()
        raise SurplusTrial(f"not run: the study has its {target} trials (finished or running in other workers)")


def _has_study(optuna, storage, name: str) -> bool:
    return any(s.study_name == name for s in optuna.get_all_study_summaries(storage=storage))


def _check_same_setup(study, setup: dict, where: str) -> None:
    saved = study.user_attrs.get("setup")
    if saved and saved != setup:
        changed = [key for key in ("search", "space", "fixed") if saved.get(key) != setup[key]]
        raise ConvlabError(f"{where} holds a study with another {' and '.join(changed)} "
                           f"(saved: {saved[changed[0]]}); rerun with the same settings to continue it, "
                           f"or choose another --out (or --study)")


def _progress(optuna, study) -> tuple[int, int]:
    """(finished trials, trials running in live workers), after failing (and queueing again) the trials of
    workers whose heartbeat stopped."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    states = optuna.trial.TrialState
    finished = study.get_trials(deepcopy=False, states=(states.COMPLETE, states.PRUNED))
    running = study.get_trials(deepcopy=False, states=(states.RUNNING,))
    return len(finished), len(running)


def _finished(optuna, study, complete_only: bool = False) -> list:
    states = (optuna.trial.TrialState.COMPLETE,) if complete_only else (
        optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return study.get_trials(deepcopy=False, states=states)


def _run_until_target(optuna, study, objective, target: int, console: Console, space: list[Param],
                      heartbeat: int, objective_of: Objective = Objective()) -> None:
    """Run trials until the study has `target` finished ones, all workers together.

    Trials other workers are running count as on their way, so this worker starts no more than the target
    needs; but it leaves only once they have finished. Until then it looks every `heartbeat` seconds: a
    worker that died stops beating, its trial is failed and a copy queued (`_progress`), and this worker
    runs the copy instead of leaving the study one trial short."""
    waiting = False
    while True:
        finished, running = _progress(optuna, study)
        if finished >= target:
            return
        todo = target - finished - running
        if todo > 0:
            _optimize(study, objective, todo, console, space, lambda: sum(_progress(optuna, study)) >= target,
                      objective_of)
            continue
        if not waiting:
            console.print(f"waiting for the {running} trials running in other workers (a trial whose worker "
                          f"stopped is run here)", markup=False)
            waiting = True
        time.sleep(heartbeat)


def _optimize(study, objective, todo: int, console: Console, space: list[Param], enough,
              objective_of: Objective = Objective()) -> None:
    """Run trials until `enough()` says the study, all workers together, has its trials (at most `todo` here).

    Checked after each trial, counting the trials other workers are running: workers that finish at the
    same moment may start one trial too many between them, never one too few."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(TextColumn("trials"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=console, transient=True, disable=not console.is_terminal)
    task = progress.add_task("tune", total=todo)

    def after_trial(study, trial):
        if trial.user_attrs.get("surplus"):
            return
        value = "-" if trial.value is None else f"{trial.value:.4f}"
        intermediate = trial.intermediate_values
        if trial.state.name == "PRUNED" and intermediate:
            value = f"{intermediate[max(intermediate)]:.4f} at epoch {max(intermediate)}"
        params = " ".join(f"{k}={_fmt(v)}" for k, v in trial.params.items())
        progress.console.print(f"trial {trial.number}: {params} -> val_{objective_of.short} {value} "
                               f"({trial.state.name.lower()}, "
                               f"{trial.user_attrs.get('seconds', 0):.1f}s)", markup=False, highlight=False)
        progress.advance(task)
        if enough():
            study.stop()

    with progress:
        study.optimize(objective, n_trials=todo, callbacks=[after_trial], catch=(SurplusTrial,))


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def print_trials(console: Console, study, space: list[Param], objective: Objective = Objective()) -> None:
    """The table of all trials: number, state, validation and test metric, the searched values, time."""
    from rich import box
    from rich.table import Table

    best = study.best_trial.number if any(t.state.name == "COMPLETE" for t in study.trials) else None
    short = objective.short
    table = Table(title=f"{len(study.trials)} trials (val {short}: best {objective.words}; * best trial)",
                  box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ["trial", "state", f"val {short}", f"test {short}", *[p.key for p in space], "epochs", "seconds"]:
        table.add_column(column, justify="left" if column == "state" else "right", no_wrap=True)
    for trial in study.trials:
        value = "" if trial.value is None else f"{trial.value:.4f}"
        if trial.state.name == "PRUNED" and trial.intermediate_values:
            value = f"({trial.intermediate_values[max(trial.intermediate_values)]:.4f})"
        test = trial.user_attrs.get(f"test_{objective.test_metric}")
        table.add_row(f"{trial.number}{' *' if trial.number == best else ''}", trial.state.name.lower(), value,
                      "" if test is None else f"{test:.4f}",
                      *[_fmt(trial.params[p.key]) if p.key in trial.params else "" for p in space],
                      str(trial.user_attrs.get("epochs_run", "")), f"{trial.user_attrs.get('seconds', 0):.1f}")
    if not console.is_terminal and console.width < 160:  # a pipe or a log file: print it whole, not squeezed
        console = Console(file=console.file, width=160, highlight=False)
    console.print(table)


def plot_search(study, space: list[Param], path: Path, objective: Objective = Objective()) -> Path:
    """The validation metric per trial with the best so far, and against each searched setting."""
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    pruned = [t for t in study.trials if t.state.name == "PRUNED" and t.intermediate_values]
    last = {t.number: t.intermediate_values[max(t.intermediate_values)] for t in pruned}
    fig = new_figure((4.2 * (1 + len(space)), 3.6))
    axes = fig.subplots(1, 1 + len(space), squeeze=False)
    ax = axes[0, 0]
    ax.scatter([t.number for t in done], [t.value for t in done], label="complete", zorder=3)
    if pruned:
        ax.scatter(list(last), list(last.values()), marker="x", color="tab:red", label="pruned (last epoch)",
                   zorder=3)
    best_so_far, best = [], -math.inf if objective.mode == "max" else math.inf
    for t in sorted(done, key=lambda t: t.number):
        best = objective.better(best, t.value)
        best_so_far.append((t.number, best))
    if best_so_far:
        ax.step(*zip(*best_so_far), where="post", color="tab:green", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel(objective.words)
    ax.set_title("search history")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    for ax, param in zip(axes[0, 1:], space):
        xs = [t.params[param.key] for t in done]
        ys = [t.value for t in done]
        if param.is_range:
            ax.scatter(xs, ys, zorder=3)
            if param.log:
                ax.set_xscale("log")
        else:
            labels = [str(v) for v in param.values]
            ax.scatter([labels.index(str(x)) for x in xs], ys, zorder=3)
            ax.set_xticks(range(len(labels)), labels=labels)
        ax.set_xlabel(param.key)
        ax.set_title(f"{objective.words} vs {param.key}")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def write_best_config(study, base: dict, path: Path, objective: Objective = Objective()) -> Path:
    """The best trial's full config as YAML, in the format `convlab train --config` reads."""
    best = study.best_trial
    conf, _ = cfg.resolve({**base, **best.params}, recipe_for=recipe_for)
    conf.train.out = None
    header = (f"# best of {len(study.trials)} trials in {path.parent / DB}: trial {best.number}, "
              f"{objective.words} {best.value:.4f}\n# use it with: convlab train --config {path}\n")
    cfg.save_config(conf, path)
    path.write_text(header + path.read_text())
    return path
