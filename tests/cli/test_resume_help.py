"""`train --resume` and `finetune --resume` name exactly the flags that training/resume.py lets a resumed run change."""
import re

import pytest

from convlab import config as cfg
from convlab.cli import main
from convlab.errors import ConvlabError
from convlab.layout import CHECKPOINTS, CONFIG, LAST
from convlab.training.resume import resume_config

# A changed value for each flag a resumed run may take (epochs: more, with a run trained without a schedule).
NEW_VALUES = {"epochs": 50, "device": "cpu", "quiet": True, "checkpoint_every": 5, "dist_timeout": 60}


def resume_help_flags(command: str, capsys, monkeypatch) -> list[str]:
    monkeypatch.setenv("COLUMNS", "1000")  # argparse wraps at the terminal's width, even inside a flag name
    with pytest.raises(SystemExit):
        main([command, "--help"])
    line = next(line for line in capsys.readouterr().out.splitlines() if line.strip().startswith("--resume"))
    return re.findall(r"--[a-z-]+", re.search(r"only (.*?) may change", line).group(1))


@pytest.fixture
def stopped_run(tmp_path):
    conf = cfg.Config()
    conf.optim.schedule = "none"
    run = tmp_path / "run"
    (run / CHECKPOINTS).mkdir(parents=True)
    cfg.save_config(conf, run / CONFIG)
    (run / CHECKPOINTS / LAST).write_bytes(b"")  # resume_config only checks that it is there
    return run


@pytest.mark.parametrize("command", ["train", "finetune"])
def test_the_resume_help_names_the_flags_a_resumed_run_may_change(command, capsys, monkeypatch, stopped_run):
    flags = resume_help_flags(command, capsys, monkeypatch)
    assert flags == [cfg.flag(key) for key in NEW_VALUES]
    for key, value in NEW_VALUES.items():
        conf = resume_config(stopped_run, {key: value})
        assert conf.flat()[key] == value
    with pytest.raises(ConvlabError, match="would change the run being resumed"):
        resume_config(stopped_run, {"lr": 0.5})
