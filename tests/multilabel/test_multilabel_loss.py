"""The multi-label loss and validation against hand computations and torch's own functions."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from convlab.evaluate.multilabel import average_precision
from convlab.multilabel.training import (MAX_POS_WEIGHT, MultiLabelLoss, multilabel_step, multilabel_validate,
                                         positive_weights)


def test_positive_weights_are_negatives_over_positives():
    labels = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 0], [1, 0, 0]], dtype=np.uint8)
    # label 0: 3 positives, 1 negative -> 1/3; label 1: 1 positive, 3 negatives -> 3; label 2: none -> 1
    np.testing.assert_allclose(positive_weights(labels), [1 / 3, 3.0, 1.0])
    rare = np.zeros((1000, 1), dtype=np.uint8)
    rare[0] = 1
    assert positive_weights(rare)[0] == MAX_POS_WEIGHT  # 999 would drown every other label


def test_loss_is_bce_with_pos_weight_and_smoothing():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 3, generator=generator)
    targets = torch.randint(0, 2, (6, 3), generator=generator).to(torch.uint8)
    weight = torch.tensor([0.5, 2.0, 1.0])
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets.float() * 0.8 + 0.1,
                                                                    pos_weight=weight)
    assert float(MultiLabelLoss(weight, smoothing=0.2)(logits, targets)) == pytest.approx(float(expected))
    plain = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets.float())
    assert float(MultiLabelLoss()(logits, targets)) == pytest.approx(float(plain))


def test_step_counts_images_whose_every_label_is_right():
    model = torch.nn.Identity()
    logits = torch.tensor([[2.0, -1.0], [2.0, 1.0], [-3.0, -1.0]])
    targets = torch.tensor([[1, 0], [1, 0], [0, 0]], dtype=torch.uint8)
    loss, count, exact = multilabel_step(model, (logits, targets), MultiLabelLoss())
    assert count == 3 and int(exact) == 2  # the second image has a wrong second label


def test_validate_reports_mean_ap_micro_f1_and_subset_accuracy():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(40, 4)).astype(np.float32)
    targets = (rng.random((40, 4)) < 0.3).astype(np.uint8)
    targets[:, 3] = 0  # a label absent from the validation rows: left out of the mean
    loader = [(torch.from_numpy(logits[i:i + 16]), torch.from_numpy(targets[i:i + 16])) for i in range(0, 40, 16)]
    logs = multilabel_validate(torch.nn.Identity(), loader, MultiLabelLoss())
    aps = [average_precision(targets[:, k], logits[:, k]) for k in range(3)]
    assert logs["val_mean_ap"] == pytest.approx(np.mean(aps))
    predicted, truth = logits >= 0, targets > 0
    tp = (predicted & truth).sum()
    assert logs["val_micro_f1"] == pytest.approx(2 * tp / (predicted.sum() + truth.sum()))
    assert logs["val_accuracy"] == pytest.approx((predicted == truth).all(1).mean())
    expected_loss = torch.nn.functional.binary_cross_entropy_with_logits(torch.from_numpy(logits),
                                                                         torch.from_numpy(targets).float())
    assert logs["val_loss"] == pytest.approx(float(expected_loss), rel=1e-5)
