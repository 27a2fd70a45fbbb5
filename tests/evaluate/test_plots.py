"""The run's plots: drawn by a child process that imports matplotlib early, or in-process as a fallback."""
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from convlab.evaluate import plots

HISTORY = [{"epoch": 1, "train_loss": 1.0, "val_loss": 0.9, "train_accuracy": 0.5, "val_accuracy": 0.6, "lr": 0.1},
           {"epoch": 2, "train_loss": 0.5, "val_loss": 0.6, "train_accuracy": 0.8, "val_accuracy": 0.7, "lr": 0.01}]
MATRIX = [[5, 1], [2, 7]]


def _paths(folder):
    return folder / "curves.png", folder / "confusion_matrix.png"


def _size(path):
    with Image.open(path) as image:
        return image.size


@pytest.mark.slow
def test_the_child_process_draws_both_plots(tmp_path):
    worker = plots.PlotProcess()
    assert worker.proc is not None
    worker.draw(HISTORY, MATRIX, ["cat", "dog"], *_paths(tmp_path))
    assert worker.proc.returncode == 0
    inline = tmp_path / "inline"
    inline.mkdir()
    plots.draw_run_plots(HISTORY, MATRIX, ["cat", "dog"], *_paths(inline))
    for name in ("curves.png", "confusion_matrix.png"):
        assert _size(tmp_path / name) == _size(inline / name)  # the same figure, drawn in either process
        assert np.asarray(Image.open(tmp_path / name)).std() > 0


@pytest.mark.slow
def test_a_failing_child_falls_back_to_drawing_here(tmp_path, monkeypatch):
    worker = plots.PlotProcess()
    worker.proc.kill()  # as if it crashed before the job
    worker.proc.wait()
    worker.draw(HISTORY, MATRIX, ["cat", "dog"], *_paths(tmp_path))
    assert (tmp_path / "curves.png").exists() and (tmp_path / "confusion_matrix.png").exists()


def test_no_child_when_python_cannot_start(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-python"))
    worker = plots.PlotProcess()
    assert worker.proc is None
    worker.draw([], MATRIX, ["cat", "dog"], *_paths(tmp_path))
    assert not (tmp_path / "curves.png").exists() and (tmp_path / "confusion_matrix.png").exists()


@pytest.mark.slow
def test_close_stops_a_waiting_child():
    worker = plots.PlotProcess()
    worker.close()
    assert worker.proc.returncode is not None


@pytest.mark.slow
def test_in_process_when_matplotlib_is_already_loaded(monkeypatch):
    assert "matplotlib" in sys.modules  # conftest loads it
    assert plots.start_plot_process() is None
    monkeypatch.delitem(sys.modules, "matplotlib")
    worker = plots.start_plot_process()
    assert isinstance(worker, plots.PlotProcess)
    worker.close()


@pytest.mark.slow
def test_a_cli_run_gets_its_plots_from_the_child(tmp_path):
    """A real `python -m convlab train`: matplotlib is never imported by the parent process."""
    out = tmp_path / "run"
    code = ("import sys, runpy; sys.argv = ['convlab', 'train', '--data', 'digits', '--model', 'tiny-cnn', "
            f"'--epochs', '1', '--quiet', '--out', {str(out)!r}]\n"
            "try:\n    runpy.run_module('convlab', run_name='__main__')\nexcept SystemExit as e:\n"
            "    assert not e.code, e.code\n"
            "print('matplotlib' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "False"
    assert _size(out / "curves.png")[0] > 100 and _size(out / "confusion_matrix.png")[0] > 100


def test_no_drawing_function_switches_matplotlibs_backend(tmp_path):
    """A notebook's backend stays what it chose: every drawing function of convlab under a non-Agg backend."""
    import types

    import matplotlib

    from convlab.compress.compare import plot_comparison
    from convlab.insight import report
    from convlab.insight.attribution.figure import grid_figure, save_figure
    from convlab.insight.features import _save_grid
    from convlab.insight.gradcam import save_cam_figure
    from convlab.insight.tune import Param, plot_search

    image, heat = np.full((8, 8), 120, np.uint8), np.linspace(0, 1, 64).reshape(8, 8)
    maps, scales, signed = {"ig": heat[None]}, {"ig": (-1.0, 1.0)}, {"ig": True}
    trial = types.SimpleNamespace(number=0, value=0.5, params={"lr": 0.1}, intermediate_values={0: 0.5},
                                  state=types.SimpleNamespace(name="COMPLETE"))
    train = types.SimpleNamespace(images=np.zeros((4, 1, 8, 8), np.uint8), labels=np.array([0, 0, 1, 1]))
    row = {"variant": "run", "size_mb": 1.0, "gzip_mb": 0.5, "accuracy": 0.9, "ms_per_image_batch_1": 1.0,
           "ms_per_image_batch_64": 0.1}
    before = matplotlib.get_backend()
    matplotlib.use("svg")
    try:
        plots.draw_run_plots(HISTORY, MATRIX, ["cat", "dog"], *_paths(tmp_path))
        save_figure(image, {"ig": heat}, scales, signed, "t", tmp_path / "a.png")
        report.png_of_figure(grid_figure([image], maps, scales, signed, ["c"]))
        report._samples_figure(types.SimpleNamespace(train=train), ["a", "b"])
        save_cam_figure(image, heat, "t", tmp_path / "cam.png")
        _save_grid(heat, "t", tmp_path / "grid.png")
        plot_search(types.SimpleNamespace(trials=[trial]), [Param("lr", low=0.01, high=1.0, log=True)],
                    tmp_path / "search.png")
        plot_comparison([row], tmp_path / "compare.png")
        assert matplotlib.get_backend() == "svg"
    finally:
        matplotlib.use(before)
    for name in ("curves.png", "a.png", "cam.png", "grid.png", "search.png", "compare.png"):
        assert Image.open(tmp_path / name).format == "PNG"


def test_no_module_chooses_a_backend_or_uses_pyplot():
    import re
    from pathlib import Path

    import convlab

    source = Path(convlab.__file__).parent
    pattern = re.compile(r"matplotlib\.use\(|import matplotlib\.pyplot|from matplotlib import pyplot")
    assert [str(path.relative_to(source)) for path in source.rglob("*.py") if pattern.search(path.read_text())] == []
