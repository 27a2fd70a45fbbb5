"""Config resolution order, type checks and the YAML round trip."""
import pytest

from convlab import config as cfg
from convlab.errors import ConvlabError


def recipe(name, task=None):
    return {"model": "lenet", "lr": 0.5, "epochs": 7}


def test_recipe_then_file_then_flags(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  lr: 0.25\nepochs: 9\n")
    conf, origin = cfg.resolve({"epochs": 3, "lr": None}, path, recipe)
    assert conf.model.name == "lenet" and origin["model"] == "recipe"
    assert conf.optim.lr == 0.25 and origin["lr"] == "file"
    assert conf.train.epochs == 3 and origin["epochs"] == "flag"
    assert conf.train.batch_size == 64 and origin["batch_size"] == "default"


def test_saved_config_round_trips(tmp_path):
    conf, _ = cfg.resolve({"data": "digits", "lr": 0.01, "augment": "light", "out": "x"}, None, recipe)
    cfg.save_config(conf, tmp_path / "config.yaml", extra={"convlab": {"version": "0"}})
    assert cfg.load_saved_config(tmp_path / "config.yaml") == conf


@pytest.mark.parametrize("key, value, fragment", [
    ("lr", -1.0, "--lr: -1.0; must be > 0.0"),
    ("epochs", 0, "--epochs: 0; must be >= 1"),
    ("epochs", 2.5, "--epochs: 2.5; expected a whole number"),
    ("val_fraction", 1.0, "--val-fraction: 1.0; must be < 1.0"),
    ("optimizer", "rmsprop", "choose from sgd, adam, adamw"),
    ("quiet", "yes", "expected true or false"),
])
def test_bad_values_name_the_option(key, value, fragment):
    with pytest.raises(ConvlabError, match=fragment.replace("(", r"\(").replace(".", r"\.")):
        cfg.resolve({key: value})


def test_unknown_key_in_file_is_named_with_suggestion(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("epochz: 3\n")
    with pytest.raises(ConvlabError, match=r"c\.yaml: unknown setting 'epochz'\. Did you mean 'epochs'\?"):
        cfg.resolve({}, path)


def test_broken_yaml_is_reported(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim: [unclosed\n")
    with pytest.raises(ConvlabError, match="not valid YAML"):
        cfg.resolve({}, path)


def test_every_choice_has_an_implementation():
    from convlab.data.augment import build_augmentation
    from convlab.data.sampling import SAMPLERS
    from convlab.training.optim import OPTIMIZERS, SCHEDULES

    assert set(cfg.choices("sampler")) == set(SAMPLERS)
    assert set(cfg.choices("optimizer")) == set(OPTIMIZERS)
    assert set(cfg.choices("schedule")) == set(SCHEDULES)
    for level in cfg.choices("augment"):
        build_augmentation(level, 32, hflip=True)
