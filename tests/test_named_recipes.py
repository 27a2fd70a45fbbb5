"""--recipe NAME: a named recipe applied over the dataset's own, under the config file and the flags."""
from __future__ import annotations

import subprocess
import sys

import pytest

from convlab import config as cfg
from convlab.errors import ConvlabError
from convlab.pipeline import recipe_for


def test_the_cifar10_recipe_sets_a_folder_of_photos_up_for_resnet8_at_32_px():
    conf, origin = cfg.resolve({"data": "imagefolder:photos", "recipe": "cifar10"}, recipe_for=recipe_for)
    assert (conf.model.name, conf.data.image_size, conf.optim.optimizer, conf.optim.lr) == ("resnet8", 32, "sgd", 0.1)
    assert (conf.train.batch_size, conf.optim.schedule, conf.data.augment) == (128, "onecycle", "standard")
    assert origin["model"] == origin["lr"] == "recipe" and origin["recipe"] == "flag"


def test_flags_and_files_win_over_a_named_recipe_which_wins_over_the_datasets(tmp_path):
    plain, _ = cfg.resolve({"data": "imagefolder:photos"}, recipe_for=recipe_for)
    assert plain.optim.optimizer == "adam" and plain.optim.label_smoothing == 0.0  # the folder recipe
    (tmp_path / "c.yaml").write_text("epochs: 3\n")
    conf, origin = cfg.resolve({"data": "imagefolder:photos", "recipe": "photo", "lr": 0.01}, tmp_path / "c.yaml",
                               recipe_for=recipe_for)
    assert (conf.optim.optimizer, conf.optim.label_smoothing, conf.data.augment) == ("adamw", 0.1, "photo")
    assert conf.optim.warmup_epochs == 1.0 and conf.train.epochs == 3 and conf.optim.lr == 0.01
    assert (origin["optimizer"], origin["epochs"], origin["lr"]) == ("recipe", "file", "flag")


def test_an_unknown_recipe_is_named_with_the_choices():
    with pytest.raises(ConvlabError, match=r"^invalid value for --recipe: 'fast'; choose from cifar10, photo$"):
        cfg.resolve({"recipe": "fast"}, recipe_for=recipe_for)
    done = subprocess.run([sys.executable, "-m", "convlab", "train", "--recipe", "fast"], capture_output=True,
                          text=True)
    assert done.returncode == 2 and done.stderr.strip().endswith("invalid value for --recipe: 'fast'; choose from "
                                                                 "cifar10, photo")


def test_datasets_lists_the_named_recipes():
    done = subprocess.run([sys.executable, "-m", "convlab", "datasets"], capture_output=True, text=True, check=True)
    lines = done.stdout.splitlines()
    assert "named recipes (--recipe NAME, applied over the dataset's):" in lines
    assert any(line.split()[:3] == ["cifar10", "image_size=32", "model=resnet8"] for line in lines)
    assert any(line.split()[0] == "photo" and "augment=photo" in line for line in lines)
