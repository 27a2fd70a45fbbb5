"""`train --resume RUN_DIR`: the saved config, the flags that may change, and the checks before resuming; and
how a torchelastic restart meets the run folder its failed attempt left."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import config as cfg
from ..errors import ConvlabError
from ..layout import CHECKPOINTS, CONFIG, LAST, WEIGHTS

# Flags that may differ from the saved run: they change neither the data nor the maths of a step
# (how often the state is saved, how long ranks wait for each other).
# --epochs may only grow, and only without a schedule that was planned over the original epochs.
CHANGEABLE = {"epochs", "quiet", "device", "out", "checkpoint_every", "dist_timeout"}


def resume_config(run_dir: str | Path, overrides: dict[str, Any], config_file=None) -> cfg.Config:
    """The run's saved config with the allowed overrides applied; other changed flags are refused."""
    run_dir = Path(run_dir).expanduser()
    if config_file:
        raise ConvlabError(f"--resume {run_dir} uses the run's own config.yaml; leave out --config {config_file}")
    if not run_dir.is_dir():
        raise ConvlabError(f"--resume {run_dir}: no such run folder")
    saved_config = run_dir / CONFIG
    if not saved_config.is_file():
        raise ConvlabError(f"--resume {run_dir}: no {CONFIG} there; it is not a convlab run folder")
    if not (run_dir / CHECKPOINTS / LAST).is_file():
        raise ConvlabError(f"--resume {run_dir}: no {CHECKPOINTS}/{LAST} there (the run stopped before its first "
                           "checkpoint); start it again without --resume")
    conf = cfg.load_saved_config(saved_config)
    saved = conf.flat()
    for key, value in overrides.items():
        if value is None:
            continue
        value = cfg.coerce(key, value, "flags")
        if key == "out":
            if Path(value).expanduser().resolve() != run_dir.resolve():
                raise ConvlabError(f"--out {value} differs from --resume {run_dir}; a resumed run stays in its folder")
            continue
        if value == saved[key]:
            continue
        if key not in CHANGEABLE:
            raise ConvlabError(f"{cfg.flag(key)} {value} would change the run being resumed (it has "
                               f"{key}={saved[key]}); a resumed run keeps its settings. For a new run with this "
                               f"change: convlab train --config {saved_config} {cfg.flag(key)} {value} --out NEW_DIR")
        if key == "epochs":
            if value < saved[key]:
                raise ConvlabError(f"--epochs {value} is fewer than the run's {saved[key]} epochs; resume can only "
                                   "train longer")
            if conf.optim.schedule != "none":
                raise ConvlabError(f"--epochs {value}: the run's {conf.optim.schedule} schedule was planned over "
                                   f"{saved[key]} epochs and cannot be extended; resume without --epochs")
        section, name = cfg.FLAT_KEYS[key]
        setattr(getattr(conf, section), name, value)
    if (run_dir / WEIGHTS).is_file() and conf.train.epochs == saved["epochs"]:
        raise ConvlabError(f"--resume {run_dir}: the run already finished its {saved['epochs']} epochs; to train it "
                           f"longer pass a larger --epochs (runs with --schedule none only)")
    conf.train.out = str(run_dir)
    return conf


def elastic_restart(run_dir: Path, named_after_job: bool) -> str | None:
    """How a restarted torchrun job meets the run folder of its failed attempt: "resume" from its checkpoint,
    "afresh" when the attempt died before its first checkpoint (it left only its config), None otherwise.

    A restart is torchelastic's (TORCHELASTIC_RESTART_COUNT > 0) or the same job launched again into the folder
    named after its --rdzv-id. A finished run is never one: writing over it is refused as for any run.
    """
    from . import distributed  # lazy: start-up time (the CLI reads CHANGEABLE for --resume's help)

    if distributed.restart_count() == 0 and not named_after_job:
        return None
    if (run_dir / WEIGHTS).is_file():
        return None
    if (run_dir / CHECKPOINTS / LAST).is_file():
        return "resume"
    return "afresh" if (run_dir / CONFIG).is_file() else None


def start_afresh(run_dir: Path) -> None:
    """Clear what a failed attempt wrote before its first checkpoint (its config), so the run starts anew."""
    (run_dir / CONFIG).unlink(missing_ok=True)
