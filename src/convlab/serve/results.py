"""What the Runs and Predict pages show of a served model beyond predictions: its results, Grad-CAM and the
attribution methods' overlays (ModelViews, a classifier's, single- or multi-label: CLASSIFIER_RESULTS; DetectionViews,
a detector's results and figures; SegmentationViews, a segmenter's).

The pictures come from the functions the report draws with (evaluate/pictures.py, evaluate/mistakes.py,
evaluate/pictures.py's reliability_png), so the page and report.html agree; uploads are decoded once, at a bounded
working size, and drawn at display size.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
from PIL import Image

from ..compress.load import load_variant
from ..data.decode import decode, fit, working_size
from ..data.download import no_downloads
from ..errors import ConvlabError
from ..evaluate.mistakes import most_confident_mistakes
from ..evaluate.pictures import (confusion_png, curves_png, data_uri, displayed, enlarged, png_of_array,
                                 reliability_png)
from ..insight.attribution import METHODS, Settings, attribute
from ..insight.attribution.figure import method_scales, overlay_map
from ..insight.gradcam import overlay, run_grad_cam
from ..layout import CONFUSION, CURVES, ONNX_SUFFIX, PR_CURVES, QUANTIZED_WEIGHTS
from ..run import Run
from ..segmentation.layout import CLASS_IOU, WORST_IMAGES


MISTAKE_OVERLAYS = 8  # (method, settings) drawings of the mistakes kept per model
SEVERAL_LABELS = ("no confusion matrix and no most confident mistakes: an image has several labels, so no single "
                  "predicted class is right or wrong; the table gives each label's errors")


class NoTorchGraph(ConvlabError):
    """The model has no float torch graph to take gradients through (an .onnx file, an int8 variant)."""


def torch_graph_missing(path: Path, method: str = "Grad-CAM") -> str | None:
    """Why Grad-CAM (or attribution `method`) cannot run on the model at `path`, or None when it can."""
    if path.suffix == ONNX_SUFFIX:
        return f"is an .onnx file: it has no torch graph to take {method}'s gradients through; serve its run folder"
    if (path / QUANTIZED_WEIGHTS).is_file():
        return f"is an int8 variant: its quantized layers have no gradients for {method}; serve the float run folder"
    return None


class ModelViews:
    """One served model opened for the pages: loaded once, its Runs results computed once, one Grad-CAM or
    attribution at a time (they hook or perturb the shared model, so two at once would see each other's)."""

    def __init__(self, name: str, path: Path, metrics: dict | None):
        self.name, self.path, self.metrics = name, Path(path), metrics
        self._run: Run | None = None
        self._results: dict | None = None
        self._overlays: OrderedDict[tuple, dict] = OrderedDict()  # the mistakes drawn, the last used last
        self._lock = threading.Lock()

    def run(self) -> Run:
        with self._lock:
            if self._run is None:
                self._run = load_variant(self.path)
            return self._run

    def gradcam_png(self, image: Image.Image) -> tuple[bytes, int, str]:
        """Grad-CAM of the predicted class over `image` (opened, not yet decoded), at display size -> (PNG,
        class index, layer)."""
        original, batch = self._inputs(image, "Grad-CAM")
        run = self.run()  # takes the lock itself
        with self._lock:
            result = run_grad_cam(run, batch)
        return png_of_array(overlay(original, result.heatmaps[0])), int(result.classes[0]), result.layer

    def attribution_png(self, image: Image.Image, method: str,
                        settings: Settings | None = None) -> tuple[bytes, int, float]:
        """Attribution `method`'s map of the predicted class over `image`, at display size, coloured as
        `convlab attribute`'s figures -> (PNG, class index, milliseconds the method took)."""
        original, batch = self._inputs(image, method)
        run = self.run()  # takes the lock itself
        with self._lock:
            start = time.perf_counter()
            result = attribute(run, batch, method, settings=settings, log=lambda _line: None)  # the page warns
            ms = (time.perf_counter() - start) * 1000
        heat, signed = result.maps[method][0], result.signed[method]
        scale = method_scales({method: heat[None]}, result.signed)[method]
        return png_of_array(overlay_map(original, heat, scale, signed)), int(result.targets[0]), ms

    def mistake_overlays(self, method: str, settings: Settings | None = None) -> dict:
        """The Runs page's mistakes drawn with attribution `method` (one colour scale over them, as in the
        report) -> {"method", "mistakes": [{"index", "overlay"}], "ms"}; kept for the last MISTAKE_OVERLAYS
        (method, the settings it reads) asked for."""
        why = torch_graph_missing(self.path, method)
        if why:
            raise NoTorchGraph(f"model {self.name!r} {why}")
        settings = settings or Settings()
        key = (method, *(getattr(settings, field) for field in METHODS[method].reads))
        shown = [m["index"] for m in self.results()["mistakes"]]
        run = self.run()
        with self._lock:
            if key not in self._overlays:
                self._overlays[key] = self._draw_mistakes(run, shown, method, settings)
                while len(self._overlays) > MISTAKE_OVERLAYS:
                    self._overlays.popitem(last=False)
            self._overlays.move_to_end(key)
            return self._overlays[key]

    @staticmethod
    def _draw_mistakes(run: Run, shown: list[int], method: str, settings: Settings) -> dict:
        if not shown:
            return {"method": method, "mistakes": [], "ms": 0.0}
        with no_downloads():
            images = run.test_data().images[shown]
        start = time.perf_counter()
        result = attribute(run, images, method, settings=settings, log=lambda _line: None)
        ms = (time.perf_counter() - start) * 1000
        maps, signed = result.maps[method], result.signed[method]
        scale = method_scales({method: maps}, result.signed)[method]
        return {"method": method, "ms": ms, "mistakes": [
            {"index": i, "overlay": data_uri(png_of_array(overlay_map(enlarged(image), heat, scale, signed)))}
            for i, image, heat in zip(shown, images, maps)]}

    def _inputs(self, image: Image.Image, method: str) -> tuple[np.ndarray, np.ndarray]:
        """(the image as shown (H, W[, 3]) uint8 at display size, the model's input (1, C, h, w) uint8), or
        NoTorchGraph; `image` is decoded once, as predict decodes it."""
        why = torch_graph_missing(self.path, method)
        if why:
            raise NoTorchGraph(f"model {self.name!r} {why}")
        run = self.run()
        channels, size = run.preprocess.channels, tuple(run.preprocess.size)
        decoded = decode(image, working_size(size))
        return displayed(decoded, channels), fit(decoded, channels, size)[None]

    def results(self) -> dict:
        """The Runs page: metrics first (metrics.json, else measured on the test split), then the pictures."""
        with self._lock:
            if self._results is None:
                self._results = self._compute_results()
            return self._results

    def _compute_results(self) -> dict:
        if self._run is None:
            self._run = load_variant(self.path)
        run, notes = self._run, []
        curves = curves_png(run.path) if run.path.is_dir() else None
        if curves is None:
            notes.append("no training curves: the model has no curves.png or metrics.csv beside it")
        found = CLASSIFIER_RESULTS[run.task](self, run, notes)
        why = torch_graph_missing(self.path)
        return {"name": self.name, "task": run.task,
                "no_maps": f"no Grad-CAM or attribution maps: {self.name} {why}" if why else None,
                "model": run.config.model.name, "data": run.config.data.name, **found,
                "curves": data_uri(curves) if curves else None,
                "calibration": self._calibration(found["metrics"]), "notes": notes}

    def _calibration(self, metrics: dict | None) -> dict | None:
        """ECE and NLL (and before_temperature's, when the run fitted one) with the reliability diagram: the
        run folder's reliability.png, else drawn from the metrics' table; None when the metrics have no ECE."""
        if not metrics or "ece" not in metrics:
            return None
        png = reliability_png(self.path, metrics)
        return {"ece": metrics["ece"], "nll": metrics["nll"], "before_temperature": metrics.get("before_temperature"),
                "reliability": data_uri(png) if png else None}

    def _test_data(self, run: Run, notes: list[str], lacking: str):
        """The run's test split, or None with a note saying why and what the page lacks for it (`lacking`)."""
        try:
            with no_downloads():  # a page view must not start a download: it says the data is missing instead
                return run.test_data()
        except ConvlabError as err:
            notes.append(f"the test data could not be loaded here, so there are {lacking} ({err})")
            return None

    def _single_label(self, run: Run, notes: list[str]) -> dict:
        """A classifier's metrics (metrics.json, else measured on the test split), confusion matrix and most
        confident mistakes."""
        test = self._test_data(run, notes, "no mistakes to show")
        metrics, source = self.metrics, "metrics.json"
        probs = None
        if test is not None:  # one pass over the test images: the mistakes need the probabilities either way
            measured, probs = run.scored(test)
            if metrics is None:
                metrics, source = measured, "measured on the test split"
        return {"metrics": metrics, "metrics_source": source if metrics is not None else None,
                "confusion": data_uri(confusion_png(metrics, run.classes)) if metrics else None,
                "mistakes": [] if probs is None else self._mistakes(run, test, probs)}

    def _multi_label(self, run: Run, notes: list[str]) -> dict:
        """A multi-label classifier's metrics (metrics.json, else measured on the test split), whose table has
        each label's threshold; no confusion matrix and no mistakes (SEVERAL_LABELS)."""
        metrics, source = self.metrics, "metrics.json"
        if metrics is None:
            test = self._test_data(run, notes, "no metrics to show")
            if test is not None:
                metrics, source = run.evaluate(arrays=test), "measured on the test split"
        notes.append(SEVERAL_LABELS)
        if metrics and not np.allclose(metrics["thresholds"], run.thresholds):
            notes.append(f"the metrics were measured at thresholds {metrics['thresholds']}; predictions use "
                         f"preprocess.json's {run.thresholds.tolist()}")
        return {"metrics": metrics, "metrics_source": source if metrics is not None else None, "confusion": None,
                "mistakes": []}

    def _mistakes(self, run: Run, test, probs: np.ndarray) -> list[dict]:
        mistakes = most_confident_mistakes(probs, test.labels, run.classes)
        shown = [m.index for m in mistakes]
        cams = None if torch_graph_missing(self.path) or not shown else run_grad_cam(run, test.images[shown])
        found = []
        for k, m in enumerate(mistakes):
            big = enlarged(test.images[m.index])
            found.append({"index": m.index, "true": m.true, "predicted": m.predicted, "prob": m.prob,
                          "image": data_uri(png_of_array(big)),
                          "gradcam": data_uri(png_of_array(overlay(big, cams.heatmaps[k]))) if cams else None})
        return found


# what each classifier task's Runs page holds beyond curves and calibration, by the run's task
CLASSIFIER_RESULTS = {"classify": ModelViews._single_label, "multilabel": ModelViews._multi_label}


class NotForDetectors(ConvlabError):
    """Grad-CAM and attribution explain one class score of a classifier's image; a detector or a segmenter has
    none per image."""


class DetectionViews:
    """A served detection run for the pages: its COCO metrics and the figures training wrote into its folder
    (training curves, precision-recall curves, confusion matrix at IoU 0.5); no maps (NotForDetectors)."""

    task, what, shown = "detect", "a detection run", "the boxes' scores are on the Predict page"
    FIGURES = {"curves": CURVES, "pr_curves": PR_CURVES, "confusion": CONFUSION}

    def __init__(self, name: str, run):
        self.name, self.task_run = name, run
        self.no_maps = (f"no Grad-CAM or attribution maps: {name} is {self.what}, and they explain one class "
                        f"score of a classifier's image; {self.shown}")

    def gradcam_png(self, image: Image.Image):
        raise NotForDetectors(self.no_maps)

    def attribution_png(self, image: Image.Image, method: str, settings: Settings | None = None):
        raise NotForDetectors(self.no_maps)

    def mistake_overlays(self, method: str, settings: Settings | None = None):
        raise NotForDetectors(self.no_maps)

    def results(self) -> dict:
        """The Runs page: metrics.json (a detector's mAP, AP50, per-class AP; a segmenter's mIoU, Dice, pixel
        accuracy, per-class IoU), then the figures the run folder holds."""
        run, found = self.task_run, {}
        for key, filename in self.FIGURES.items():
            path = run.path / filename
            found[key] = data_uri(path.read_bytes()) if path.is_file() else None
        notes = [f"no {filename} in {run.path.name}" for key, filename in self.FIGURES.items() if not found[key]]
        return {"name": self.name, "task": self.task, "no_maps": self.no_maps, "model": run.config.model.name,
                "data": run.config.data.name, "metrics": run.metrics,
                "metrics_source": "metrics.json" if run.metrics is not None else None, **found, "mistakes": [],
                "notes": notes}


class SegmentationViews(DetectionViews):
    """A served segmentation run for the pages: its metrics.json and its figures (training curves, IoU per
    class, the worst test images overlaid); no maps."""

    task, what, shown = "segment", "a segmentation run", "its masks are on the Predict page"
    FIGURES = {"curves": CURVES, "class_iou": CLASS_IOU, "worst_images": WORST_IMAGES}
