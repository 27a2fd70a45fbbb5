"""Every tool on a segmentation run: predict (shares, mask and overlay PNGs, RLE JSON, tiles), eval, report,
compare and tune know the task; the commands a segmenter cannot do are refused by name (exit 2, one line)."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cli_output import assert_one_line_error, run_cli
from convlab import config as cfg
from convlab.segmentation.synthetic import make_shape_masks

N_TEST = 6


@pytest.fixture(scope="module")
def masks_run(tmp_path_factory):
    """tiny-unet trained 3 epochs on a few generated shape masks (seconds on a CPU), shared by the tests that
    read it."""
    import torch
    from rich.console import Console

    from convlab import train

    root = tmp_path_factory.mktemp("shape-masks")
    make_shape_masks(root / "data", 24, N_TEST, seed=4)
    threads = torch.get_num_threads()
    try:
        run = train(data=f"masks:{root / 'data'}", model="tiny-unet", image_size=64, epochs=3, batch_size=8,
                    lr=3e-3, optimizer="adam", threads=1, out=str(root / "run"), quiet=True,
                    console=Console(file=io.StringIO()))
    finally:
        torch.set_num_threads(threads)
    return run


@pytest.fixture
def config_only_run(tmp_path):
    """A folder with a segmentation run's config.yaml alone: refusals come before anything else is read."""
    conf, _ = cfg.resolve({"data": "shape-masks"})
    cfg.save_config(conf, tmp_path / "config.yaml")
    return tmp_path


def _test_paths(run) -> list[str]:
    items, _ = run.test_items()
    return [str(item.path) for item in items]


# -- refused by name ------------------------------------------------------------------------------------------
REFUSED = [
    (["gradcam", "RUN", "x.png", "--out", "OUT"], "gradcam"),
    (["attribute", "RUN", "x.png"], "attribute"),
    (["features", "RUN", "x.png", "--out", "OUT"], "features"),
    (["compress", "prune", "RUN", "--out", "OUT"], "prune"),
    (["compress", "quantize", "RUN", "--out", "OUT"], "quantize"),
    (["distill", "--teacher", "RUN", "--out", "OUT"], "distill --teacher"),
    (["report", "RUN", "--method", "gradcam"], "report --method"),
]


@pytest.mark.parametrize("argv, what", REFUSED, ids=[what for _, what in REFUSED])
def test_commands_a_segmenter_cannot_do_are_refused_by_name(config_only_run, tmp_path, capsys, argv, what):
    argv = [str(config_only_run) if a == "RUN" else str(tmp_path / "out") if a == "OUT" else a for a in argv]
    code, _, err = run_cli(capsys, *argv)
    assert_one_line_error(code, err, f"{config_only_run} is a segment run",
                          f"{what} is not available for segment runs yet")
    assert not (tmp_path / "out").exists()


# -- tune scores segmentation trials by the task's monitor ----------------------------------------------------
def test_tune_reports_validation_miou_to_the_trial():
    from convlab.insight.tune import Objective, ReportToTrial

    objective = Objective.of({"data": "shape-masks"})
    assert (objective.monitor, objective.test_metric, objective.words, objective.short) == \
        ("val_miou", "miou", "validation mIoU", "mIoU")

    class Trial:
        def __init__(self):
            self.reported = []

        def report(self, value, step):
            self.reported.append((value, step))

        def should_prune(self):
            return False

    class State:
        epoch = 2

    trial = Trial()
    callback = ReportToTrial(trial, objective)
    callback.on_epoch_end(State(), {"val_loss": 0.1, "val_miou": 0.7, "val_pixel_accuracy": 0.99})
    assert trial.reported == [(0.7, 2)] and callback.best == 0.7


# -- what predict writes, on a hand-made class map ------------------------------------------------------------
def _hand_made(tmp_path) -> tuple[dict, list[str]]:
    classes = ["background", "square", "disc", "triangle"]
    mask = np.zeros((20, 30), np.uint8)
    mask[2:9, 3:12] = 1
    mask[10:18, 15:29] = 3
    mask[0, 29] = 3
    path = tmp_path / "scan.png"
    Image.fromarray(np.full((20, 30, 3), 90, np.uint8)).save(path)
    counts = np.bincount(mask.ravel(), minlength=4)
    return ({"path": str(path), "width": 30, "height": 20, "mask": mask,
             "pixels": {classes[k]: int(n) for k, n in enumerate(counts) if n}}, classes)


def test_the_json_masks_are_coco_rle_that_pycocotools_decodes_back(tmp_path):
    from pycocotools import mask as coco_mask

    from convlab.segmentation.predictions import as_json

    result, classes = _hand_made(tmp_path)
    answer = json.loads(json.dumps(as_json([result], classes)))[0]
    assert [m["class"] for m in answer["masks"]] == ["background", "square", "triangle"]  # no disc: absent
    rebuilt = np.full(result["mask"].shape, 255, np.uint8)
    for entry in answer["masks"]:
        assert entry["rle"]["size"] == [20, 30] and isinstance(entry["rle"]["counts"], str)
        decoded = coco_mask.decode({"size": entry["rle"]["size"], "counts": entry["rle"]["counts"].encode()})
        assert decoded.sum() == answer["pixels"][entry["class"]]
        rebuilt[decoded.astype(bool)] = classes.index(entry["class"])
    np.testing.assert_array_equal(rebuilt, result["mask"])


def test_saved_masks_are_palette_pngs_of_the_class_indices_beside_an_overlay_with_a_legend(tmp_path):
    from convlab.segmentation.predictions import save_masks

    result, classes = _hand_made(tmp_path)
    written = save_masks([result, result], classes, tmp_path / "out")
    assert [p.name for p in written] == ["scan_mask.png", "scan-2_mask.png"]
    saved = Image.open(written[0])
    assert saved.mode == "P"
    np.testing.assert_array_equal(np.asarray(saved), result["mask"])
    painted = Image.open(tmp_path / "out" / "scan_overlay.png")
    assert painted.width > 30 and painted.height >= 20  # the legend beside the image
    pixels = np.asarray(painted.convert("RGB"))
    assert (pixels[0, 0] == 90).all() and not (pixels[4, 5] == 90).all()  # background kept, the square painted


# -- on a trained segmenter -----------------------------------------------------------------------------------
@pytest.mark.slow
def test_predict_prints_shares_saves_masks_and_gives_rle_that_decodes_to_its_mask(masks_run, tmp_path, capsys):
    from pycocotools import mask as coco_mask

    paths = _test_paths(masks_run)[:2]
    expected = masks_run.predict(paths)
    code, out, err = run_cli(capsys, "predict", str(masks_run.path), *paths, "--save", str(tmp_path / "saved"))
    assert code == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith(f"{paths[0]} (64x64): ") and "%" in lines[0]
    top = max(expected[0]["pixels"], key=expected[0]["pixels"].get)
    assert f"{top} {100 * expected[0]['pixels'][top] / 64 ** 2:.1f}%" in lines[0]
    for path, answer in zip(paths, expected):
        stem = Path(path).stem
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "saved" / f"{stem}_mask.png")),
                                      answer["mask"])
        assert (tmp_path / "saved" / f"{stem}_overlay.png").is_file()
    code, out, err = run_cli(capsys, "predict", str(masks_run.path), *paths, "--json")
    assert code == 0, err
    for answer, printed in zip(expected, json.loads(out)):
        assert (printed["path"], printed["width"], printed["height"]) == (answer["path"], 64, 64)
        rebuilt = np.full((64, 64), 255, np.uint8)
        for entry in printed["masks"]:
            rle = {"size": entry["rle"]["size"], "counts": entry["rle"]["counts"].encode()}
            rebuilt[coco_mask.decode(rle).astype(bool)] = masks_run.classes.index(entry["class"])
        np.testing.assert_array_equal(rebuilt, answer["mask"])


@pytest.mark.slow
def test_predict_checks_the_tiling_flags_and_refuses_other_tasks_flags(masks_run, capsys):
    path = _test_paths(masks_run)[0]
    code, out, err = run_cli(capsys, "predict", str(masks_run.path), path, "--tile", "32", "--overlap", "0.5")
    assert code == 0, err
    tiled = masks_run.predict([path], tile=32, overlap=0.5)[0]
    shares = "  ".join(f"{name} {100 * n / 64 ** 2:.1f}%" for name, n in
                       sorted(tiled["pixels"].items(), key=lambda item: -item[1]))
    assert out.strip() == f"{path} (64x64): {shares}"
    for flags, fragments in ((["--top-k", "3"], ["--top-k is for classify and multilabel runs", "is a segment run", "--tile"]),
                             (["--conf", "0.5"], ["--conf is for detect runs", "is a segment run"]),
                             (["--tile", "8"], ["--tile 8: a tile is at least 16 pixels"]),
                             (["--tile", "32", "--overlap", "1"], ["--overlap 1.0: the overlap is a fraction"]),
                             (["--overlap", "0.5"], ["--overlap 0.5 needs --tile SIZE"])):
        code, _, err = run_cli(capsys, "predict", str(masks_run.path), path, *flags)
        assert_one_line_error(code, err, *fragments)


@pytest.mark.slow
def test_eval_prints_the_runs_miou_dice_and_a_table_per_class(masks_run, capsys):
    metrics = json.loads((masks_run.path / "metrics.json").read_text())
    code, out, err = run_cli(capsys, "eval", str(masks_run.path))
    assert code == 0, err
    head = out.splitlines()[0]
    assert f"mIoU {metrics['miou']:.4f}" in head and f"Dice {metrics['dice']:.4f}" in head
    assert f"pixel accuracy {metrics['pixel_accuracy']:.4f}" in head and f"({N_TEST} images)" in head
    for name in masks_run.classes:
        assert name in out
    code, out, err = run_cli(capsys, "eval", str(masks_run.path), "--json")
    assert code == 0, err
    assert json.loads(out)["miou"] == pytest.approx(metrics["miou"], abs=1e-12)
    code, out, err = run_cli(capsys, "eval", str(masks_run.path), "--json", "--tile", "32", "--overlap", "0.5")
    assert code == 0, err
    tiled = masks_run.evaluate(tile=32, overlap=0.5)
    assert json.loads(out)["miou"] == pytest.approx(tiled["miou"], abs=1e-12)


@pytest.mark.slow
def test_a_classifier_refuses_a_segmenters_flags_by_name(digits_run, capsys):
    code, _, err = run_cli(capsys, "eval", str(digits_run.path), "--tile", "32")
    assert_one_line_error(code, err, "--tile is for segment runs", "is a classify run")
    code, _, err = run_cli(capsys, "predict", str(digits_run.path), "x.png", "--save", "out")
    assert_one_line_error(code, err, "--save is for detect and segment runs", "is a classify run", "--top-k")


@pytest.mark.slow
def test_report_of_a_segmenter_has_its_miou_first_and_the_worst_images(masks_run, tmp_path, capsys):
    out = tmp_path / "report.html"
    code, _, err = run_cli(capsys, "report", str(masks_run.path), "--out", str(out))
    assert code == 0, err
    page = out.read_text()
    assert page.index("Test metrics") < page.index("Test images of lowest mIoU") < page.index("Config")
    assert f"test mIoU <b>{masks_run.metrics['miou']:.4f}</b>" in page
    assert "IoU per class" in page and "Training curves" in page
    assert page.count("<figure>") == N_TEST  # every test image (fewer than 6 shown at most)
    assert page.count('alt="truth of ') == page.count('alt="prediction on ') == N_TEST
    assert "Attribution" not in page and "http" not in page.split("</style>")[1]  # self-contained


@pytest.mark.slow
def test_export_onnx_agrees_with_torch_at_the_training_size_and_another(masks_run, tmp_path, capsys):
    import onnxruntime
    import torch

    out = tmp_path / "masks.onnx"
    code, printed, err = run_cli(capsys, "export", str(masks_run.path), "--out", str(out))
    assert code == 0, err
    assert "any height and width" in printed and "max abs logit difference" in printed
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    assert json.loads(meta["convlab.labels"]) == masks_run.classes and meta["convlab.task"] == "segment"
    model = masks_run.model.cpu().eval()
    for shape in ((1, 3, 64, 64), (2, 3, 40, 72)):
        x = torch.randn(*shape, generator=torch.Generator().manual_seed(7))
        with torch.inference_mode():
            expected = model(x).numpy()
        got = session.run(["logits"], {"images": x.numpy()})[0]
        assert got.shape == (shape[0], len(masks_run.classes), *shape[2:])
        np.testing.assert_allclose(got, expected, atol=1e-4)
    code, _, err = run_cli(capsys, "eval", str(out))
    assert_one_line_error(code, err, "exported segment model", "pass the run folder")


@pytest.mark.slow
def test_export_of_lraspp_keeps_free_sizes(tmp_path):
    """torchvision's LR-ASPP (MobileNetV3) through the same exporter: untrained weights, random check inputs."""
    import torch
    from rich.console import Console

    from convlab.compress.export_segmentation import export_segmenter_onnx
    from convlab.segmentation.models import build_segmenter
    from convlab.segmentation.run import SegmentationInput, SegmentationRun

    conf, _ = cfg.resolve({"data": f"masks:{tmp_path / 'absent'}", "model": "lraspp_mobilenet_v3_large"})
    torch.manual_seed(0)
    run = SegmentationRun(tmp_path, build_segmenter("lraspp_mobilenet_v3_large", 2, 3), conf,
                          ["background", "person"], SegmentationInput(64, 3, [0.5] * 3, [0.25] * 3))
    printed = io.StringIO()
    out = export_segmenter_onnx(run, tmp_path / "lraspp.onnx", console=Console(file=printed, width=300))
    assert out.is_file() and "any height and width" in printed.getvalue()
    assert "3 images of 2 sizes (0 of the run's test images" in printed.getvalue()


@pytest.mark.slow
def test_compare_ranks_segmenters_by_miou(masks_run):
    from convlab.compress.compare import compare, comparison_table

    rows = compare([masks_run.path], latency_seconds=0.01)
    assert rows[0]["metric"] == "miou" and rows[0]["miou"] == pytest.approx(masks_run.metrics["miou"], abs=1e-12)
    assert rows[0]["test_images"] == N_TEST and rows[0]["ms_per_image_batch_1"] > 0
    assert [column.header for column in comparison_table(rows).columns][6] == "mIoU"


@pytest.mark.slow
def test_tune_scores_segmentation_trials_by_validation_miou(tmp_path):
    import csv

    import torch
    from rich.console import Console

    from convlab.insight.tune import tune

    make_shape_masks(tmp_path / "data", 16, 4, seed=6)
    threads = torch.get_num_threads()
    try:
        result = tune(tmp_path / "study", ["lr=0.003"], trials=1, search="grid", data=f"masks:{tmp_path / 'data'}",
                      model="tiny-unet", image_size=64, epochs=1, val_fraction=0.25, threads=1,
                      console=Console(file=io.StringIO()))
    finally:
        torch.set_num_threads(threads)
    trial = result.study.trials[0]
    run_dir = tmp_path / "study" / "trials" / "trial-0000"
    with open(run_dir / "metrics.csv") as handle:
        assert trial.value == pytest.approx(max(float(row["val_miou"]) for row in csv.DictReader(handle)))
    assert trial.user_attrs["test_miou"] == json.loads((run_dir / "metrics.json").read_text())["miou"]
    assert "validation mIoU" in (tmp_path / "study" / "best.yaml").read_text()
