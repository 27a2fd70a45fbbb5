"""A multi-label run: the classifier's run folder and model, read through sigmoids and per-label thresholds."""
from __future__ import annotations


import numpy as np
import torch

from ..data.arrays import ImageArrays
from ..data.decode import list_images, load_image
from ..errors import ConvlabError
from ..evaluate.calibration import calibration_report
from ..evaluate.multilabel import DEFAULT_THRESHOLD, multilabel_metrics
from ..models.tta import tta_named
from ..run import Run, _expand_inputs


class MultiLabelRun(Run):
    """A Run whose probabilities are one sigmoid per class; `thresholds` (fitted on validation, kept in
    preprocess.json) say which labels an image has."""

    task = "multilabel"
    several_labels = True

    @property
    def thresholds(self) -> np.ndarray:
        """(classes,) the label thresholds; 0.5 for a run that has none."""
        if self.preprocess.thresholds is None:
            return np.full(len(self.classes), DEFAULT_THRESHOLD)
        return np.asarray(self.preprocess.thresholds, dtype=np.float64)

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """Logits -> each label's probability, float64 (after the fitted temperature, one per label)."""
        return torch.sigmoid(torch.from_numpy(self.preprocess.scaled(logits))).double().numpy()

    def scored(self, arrays: ImageArrays, tta: str = "none") -> tuple[dict, np.ndarray]:
        """Multi-label metrics (evaluate/multilabel.py) at the stored thresholds, and calibration (before and after
        the run's temperatures when it has them)."""
        if not arrays.multi_hot:
            raise ConvlabError(f"run {self.path} is multi-label: score it on data with a label list per image "
                               f"(--data csv:FILE)")
        logits, probs = self.predict_outputs(arrays.images, tta)
        metrics = multilabel_metrics(arrays.labels, probs, self.classes, self.thresholds)
        raw = None if self.preprocess.temperature is None else torch.sigmoid(torch.from_numpy(logits)).double().numpy()
        metrics.update(calibration_report(probs, arrays.labels, raw))
        return metrics, probs

    def predict(self, inputs, top_k: int = 5, tta: str = "none") -> list[dict]:
        """Images -> every label at or above its threshold with its probability (most probable first), and the
        top-k labels whatever their thresholds.

        Returns [{"path", "labels": [{"label", "prob", "threshold"}], "top": [{"label", "prob"}]}, ...]."""
        size = tta_named(tta).source_size(tuple(self.preprocess.size))
        items = _expand_inputs(inputs, list_images)
        if not items:
            raise ConvlabError("predict: no images given (folders given held no image files)")
        images = np.stack([load_image(source, self.preprocess.channels, size) for _, source in items])
        return label_predictions(self.predict_arrays(images, tta), self.classes, self.thresholds,
                                 [name for name, _ in items], top_k)


def label_predictions(probs: np.ndarray, classes: list[str], thresholds: np.ndarray, names: list[str | None],
                      top_k: int) -> list[dict]:
    """(N, classes) probabilities -> predict's list: the labels each image has, and its top-k."""
    k = max(1, min(top_k, len(classes)))
    results = []
    for name, row in zip(names, probs):
        order = np.argsort(-row)
        labels = [{"label": classes[i], "prob": float(row[i]), "threshold": float(thresholds[i])}
                  for i in order if row[i] >= thresholds[i]]
        results.append({"path": name, "labels": labels,
                        "top": [{"label": classes[i], "prob": float(row[i])} for i in order[:k]]})
    return results
