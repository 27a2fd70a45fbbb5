"""Segmentation through the one pipeline: the small preset learns the shapes, the run folder is a segmentation
run's, exact resume, fine-tuning a U-Net on a classifier, and what a segmentation run cannot do is refused."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

from convlab.layout import CHECKPOINTS, CURVES
from convlab.pipeline import train
from convlab.segmentation.metrics import segmentation_metrics
from convlab.segmentation.synthetic import make_shape_masks
from convlab.tasks import load_run
from cli_output import assert_one_line_error, run_cli


@pytest.fixture(scope="module")
def shapes_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("shape-masks-run") / "run"
    home = tmp_path_factory.mktemp("home")
    return train(data="shape-masks", data_dir=str(home), out=str(out), quiet=True, threads=1)


@pytest.mark.slow
def test_the_small_unet_reaches_miou_of_08_on_shapes(shapes_run):
    metrics = shapes_run.metrics
    assert metrics["miou"] >= 0.8, metrics
    assert set(metrics["per_class_iou"]) == {"background", "square", "disc", "triangle"}
    assert metrics["num_images"] == 48
    assert 0.8 <= metrics["pixel_accuracy"] <= 1.0


@pytest.mark.slow
def test_a_segmentation_run_folder_holds_its_task_figures_and_monitor(shapes_run):
    path = shapes_run.path
    assert (path / CURVES).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "task: segment" in (path / "config.yaml").read_text()
    header = (path / "metrics.csv").read_text().splitlines()[0]
    assert header == "epoch,train_loss,val_loss,val_miou,val_pixel_accuracy,lr,seconds,images_per_second"
    with safe_open(str(path / CHECKPOINTS / "best.safetensors"), "pt") as best:
        assert "val_miou" in best.metadata()  # the best epoch is picked by mIoU, not accuracy
    loaded = load_run(path)
    assert loaded.evaluate()["miou"] == pytest.approx(shapes_run.metrics["miou"], abs=1e-9)


@pytest.mark.slow
def test_predicted_masks_rescored_independently_give_the_eval_miou(shapes_run, tmp_path):
    """predict's masks, written as PNGs and scored again by the metric, give what evaluate gave."""
    items, _ = shapes_run.test_items()
    found = shapes_run.predict([item.path for item in items])
    for item, answer in zip(items, found):
        Image.fromarray(answer["mask"]).save(tmp_path / item.path.name)
        assert answer["mask"].shape == item.mask.shape
    reread = [np.array(Image.open(tmp_path / item.path.name)) for item in items]
    again = segmentation_metrics([item.mask for item in items], reread, shapes_run.classes)
    assert again["miou"] == pytest.approx(shapes_run.metrics["miou"], abs=1e-9)


@pytest.mark.slow
def test_tiled_prediction_equals_the_whole_image_pass_on_an_image_of_the_training_size(shapes_run):
    items, _ = shapes_run.test_items()
    image = np.array(Image.open(items[0].path))
    whole = shapes_run.probabilities(image, 255)
    tiled = shapes_run.probabilities(image, 255, tile=64, overlap=0.5)
    torch.testing.assert_close(tiled, whole, atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_resuming_a_segmentation_run_gives_the_uninterrupted_run(tmp_path):
    make_shape_masks(tmp_path / "data", 16, 4, seed=3)
    common = dict(data=f"masks:{tmp_path / 'data'}", model="tiny-unet", image_size=64, optimizer="adam",
                  lr=1e-3, schedule="none", batch_size=8, augment="light", quiet=True, threads=1,
                  deterministic=True, val_fraction=0.25)
    whole = train(epochs=2, out=str(tmp_path / "whole"), **common)
    train(epochs=1, out=str(tmp_path / "part"), **common)
    resumed = train(resume=str(tmp_path / "part"), epochs=2, quiet=True)
    assert resumed.metrics["miou"] == whole.metrics["miou"]
    rows = [(tmp_path / name / "metrics.csv").read_text().splitlines() for name in ("whole", "part")]
    strip = [[",".join(line.split(",")[:5]) for line in table] for table in rows]  # no timings
    assert strip[0] == strip[1]


@pytest.mark.slow
def test_a_unet_fine_tunes_on_a_torchvision_encoder_with_a_weights_file(tmp_path):
    from safetensors.torch import save_file
    from torchvision.models import mobilenet_v2

    torch.manual_seed(0)
    weights = tmp_path / "mobilenet_v2.safetensors"
    save_file({k: v.contiguous() for k, v in mobilenet_v2(weights=None).state_dict().items()}, str(weights))
    make_shape_masks(tmp_path / "data", 8, 4, seed=5)
    from convlab import finetune

    run = finetune("torchvision:mobilenet_v2", data=f"masks:{tmp_path / 'data'}", weights=str(weights),
                   image_size=64, epochs=1, batch_size=4, strategy="linear-probe", out=str(tmp_path / "run"),
                   quiet=True, threads=1)
    assert run.config.model.name == "unet" and run.preprocess.backbone
    assert run.preprocess.mean == pytest.approx([0.485, 0.456, 0.406])  # the weights' normalization
    loaded = load_run(run.path)
    assert loaded.evaluate()["miou"] == pytest.approx(run.metrics["miou"], abs=1e-9)


def test_a_dice_loss_run_trains_and_reports_finite_numbers(tmp_path):
    make_shape_masks(tmp_path / "data", 8, 4, seed=2)
    run = train(data=f"masks:{tmp_path / 'data'}", model="tiny-unet", image_size=64, epochs=1, batch_size=8,
                loss="dice+ce", out=str(tmp_path / "run"), quiet=True, threads=1, val_fraction=0.25)
    assert "loss: dice+ce" in (run.path / "config.yaml").read_text()
    rows = (run.path / "metrics.csv").read_text().splitlines()
    assert np.isfinite(float(rows[1].split(",")[1]))
    assert 0.0 <= run.metrics["miou"] <= 1.0


@pytest.mark.parametrize("flags, fragment", [
    (["--engine", "scratch"], "--engine scratch is not available for segment runs"),
    (["--tensorboard"], "--tensorboard is not available for segment runs"),
    (["--task", "detect"], "--task detect does not fit --data shape-masks"),
])
def test_what_a_segmentation_run_cannot_do_is_refused_by_name(tmp_path, capsys, flags, fragment):
    code, _, err = run_cli(capsys, "train", "--data", "shape-masks", "--out", str(tmp_path / "run"), *flags)
    assert_one_line_error(code, err, fragment)
    assert not (tmp_path / "run").exists()


def test_the_data_names_the_task_and_coco_files_serve_both(tmp_path):
    from convlab import config as cfg
    from convlab.pipeline import recipe_for
    from convlab.tasks import task_of

    for flags, task, model in (({"data": "shape-masks"}, "segment", "tiny-unet"),
                               ({"data": "masks:DIR"}, "segment", None),
                               ({"data": "coco:x.json"}, "detect", None),
                               ({"data": "coco:x.json", "task": "segment"}, "segment", None),
                               ({"data": "yolo:data.yaml", "task": "segment"}, "segment", None)):
        conf, origin = cfg.resolve(flags, recipe_for=recipe_for)
        assert task_of(conf).name == task
        if model:
            assert conf.model.name == model and origin["model"] == "recipe"
    conf, _ = cfg.resolve({"data": "coco:x.json", "task": "segment"}, recipe_for=recipe_for)
    assert "fasterrcnn" not in conf.model.name  # the segment recipe, not the detector's


def test_a_classifier_refuses_the_dice_loss(tmp_path, capsys):
    code, _, err = run_cli(capsys, "train", "--loss", "dice", "--out", str(tmp_path / "run"))
    assert_one_line_error(code, err, "--loss dice is not available for classify runs")
