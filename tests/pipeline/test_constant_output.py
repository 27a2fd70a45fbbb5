"""A run whose evaluation outputs are the same for every image says so, in its printout and its metrics.json."""
import io
import json

import numpy as np
import torch
from rich.console import Console

from convlab import train
from convlab.evaluate.metrics import classification_metrics
from convlab.training.callbacks import Callback


def test_constant_probabilities_are_flagged_and_varied_ones_are_not():
    from convlab.evaluate.metrics import constant_output_warning

    classes = [str(i) for i in range(10)]
    constant = np.full((40, 10), 0.1) + np.random.default_rng(0).normal(0, 1e-5, (40, 10))
    constant[:, 3] += 1e-3  # one class a little ahead everywhere: every prediction is '3'
    warning = constant_output_warning(constant, classes)
    assert warning and "every one of the 40 test images" in warning
    assert "'3'" in warning and "BatchNorm" in warning
    assert classification_metrics(np.arange(40) % 10, constant, classes)["warnings"] == [warning]
    varied = np.eye(10)[np.arange(40) % 10] * 0.9 + 0.01
    assert constant_output_warning(varied, classes) is None
    assert "warnings" not in classification_metrics(np.arange(40) % 10, varied, classes)
    one_class_but_confident_differently = np.tile([0.6] + [0.4 / 9] * 9, (40, 1))
    one_class_but_confident_differently[::2] = [0.9] + [0.1 / 9] * 9
    assert constant_output_warning(one_class_but_confident_differently, classes) is None


class ForgetTheInput(Callback):
    """At the end of training, zero the classifier's weights: the logits are its bias, whatever the image."""

    def on_train_end(self, state):
        last = [m for m in state.plain_model.modules() if isinstance(m, torch.nn.Linear)][-1]
        with torch.no_grad():
            last.weight.zero_()


def test_a_run_with_constant_test_outputs_warns_in_its_printout_and_metrics_json(tmp_path):
    printed = io.StringIO()
    run = train(data="digits", model="tiny-cnn", epochs=1, val_fraction=0.0, threads=1, quiet=True,
                out=str(tmp_path / "r"), callbacks=[ForgetTheInput()], console=Console(file=printed, soft_wrap=True))
    saved = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert len(saved["warnings"]) == 1 and "same output for every one of the 360 test images" in saved["warnings"][0]
    assert f"warning: {saved['warnings'][0]}" in printed.getvalue()
