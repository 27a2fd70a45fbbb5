"""One Settings for the CLI, Python and the web app: the same names, the same ranges, checked in one place."""
from __future__ import annotations

import numpy as np
import pytest

import convlab
from convlab.cli import main
from convlab.errors import ConvlabError
from convlab.insight.attribution import Settings

pytest.importorskip("captum")
OUT_OF_RANGE = [("samples", 0), ("samples", 2001), ("steps", 0), ("steps", 257)]


@pytest.mark.parametrize("name, value", OUT_OF_RANGE)
def test_settings_refuse_values_out_of_range(name, value):
    low, high = Settings.ranges[name]
    with pytest.raises(ConvlabError, match=f"--{name} must be an integer from {low} to {high}, got {value}"):
        Settings(**{name: value})
    Settings(**{name: low}), Settings(**{name: high})  # the ends are allowed
    with pytest.raises(ConvlabError, match="got '5'"):
        Settings(**{name: "5"})


def test_python_takes_samples_and_steps_by_their_cli_names(digits_run):
    images = digits_run.test_data().images[:2]
    quiet = dict(log=lambda _line: None)
    few = convlab.attribute(digits_run, images, "ig,lime", steps=4, samples=20, **quiet).maps
    same = convlab.attribute(digits_run, images, "ig,lime", settings=Settings(steps=4, samples=20), **quiet).maps
    default = convlab.attribute(digits_run, images, "ig,lime", **quiet).maps
    for method in ("ig", "lime"):
        np.testing.assert_array_equal(few[method], same[method])
        assert not np.allclose(few[method], default[method])
    with pytest.raises(ConvlabError, match="--steps must be an integer from 1 to 256, got 300"):
        convlab.attribute(digits_run, images, "ig", steps=300, **quiet)


def test_the_command_line_takes_steps_and_refuses_values_out_of_range(digits_run, tmp_path, capsys):
    images = digits_run.test_data().images[:1]
    path = tmp_path / "digit.png"
    from PIL import Image

    Image.fromarray(images[0, 0]).save(path)
    run = str(digits_run.path)
    assert main(["attribute", run, str(path), "--method", "ig", "--steps", "4", "--out", str(tmp_path / "o")]) == 0
    expected = convlab.attribute(digits_run, images, "ig", steps=4, log=lambda _line: None).maps["ig"][0]
    np.testing.assert_allclose(np.load(tmp_path / "o" / "digit-ig.npy"), expected, rtol=1e-5, atol=1e-7)
    for name, value in OUT_OF_RANGE:
        capsys.readouterr()
        assert main(["attribute", run, str(path), f"--{name}", str(value), "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err
        low, high = Settings.ranges[name]
        assert f"--{name} must be an integer from {low} to {high}, got {value}" in err, err
        assert len(err.strip().splitlines()) == 1, err


def test_the_help_states_the_settings_ranges_and_defaults(capsys):
    """--help names them without importing torch, so it writes them out: they must be Settings' own."""
    with pytest.raises(SystemExit):
        main(["attribute", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for name in ("samples", "steps"):
        low, high = Settings.ranges[name]
        assert f"{low} to {high} (default: {getattr(Settings(), name)})" in text
