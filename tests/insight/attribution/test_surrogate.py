"""The batched LIME and KernelSHAP against captum's Lime and KernelShap, the reference they replace."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from convlab.insight.attribution import METHODS, Settings
from convlab.insight.attribution.masks import feature_mask
from convlab.insight.attribution.methods import on_off_kernel
from convlab.insight.attribution.surrogate import SURROGATES, draw_masks, surrogate_coefficients
from convlab.models.registry import create_model

pytest.importorskip("captum")


def captum_explainer(name: str, model, masks: torch.Tensor):
    """captum's class for `name`, fed `masks` (S, F) instead of drawing its own."""
    from captum.attr import KernelShap, Lime

    def given_masks(_inputs, **_kwargs):
        for row in masks:
            yield row[None]

    if name == "lime":
        return Lime(model, similarity_func=on_off_kernel, perturb_func=given_masks)
    explainer = KernelShap(model)
    explainer.perturb_func = given_masks  # KernelShap fixes its sampler in __init__; the fit is what is compared
    return explainer


@pytest.mark.parametrize("name", ["lime", "kernelshap"])
def test_batched_maps_equal_captums_given_the_same_masks(name):
    """Two channels, a baseline that is not zero and a superpixel mask (its F differs per image)."""
    torch.manual_seed(0)
    model = create_model("tiny-cnn", 2, 3, (12, 12)).eval()
    x = torch.randn(3, 2, 12, 12)
    baselines = torch.randn(3, 2, 12, 12) * 0.5
    target = torch.tensor([0, 2, 1])
    settings = Settings(samples=60, batch=25, seed=3, mask="superpixel")  # batches cross the images' samples
    ours = METHODS[name](settings).attribute(model, x, target, baselines).numpy()
    mask = feature_mask(x, "superpixel")
    features = [int(m.max()) + 1 for m in mask]
    masks = draw_masks(SURROGATES[name], features, 60, torch.Generator().manual_seed(3))  # what it drew
    for i, count in enumerate(features):
        with torch.no_grad():
            theirs = captum_explainer(name, model, masks[i, :, :count]).attribute(
                x[i:i + 1], baselines=baselines[i:i + 1], target=target[i:i + 1], feature_mask=mask[i:i + 1],
                n_samples=60).sum(1)[0]
        scale = np.abs(theirs.numpy()).max()
        assert scale > 1e-3  # a map, not zeros
        # the forward passes differ by float rounding (one image per pass against 25); KernelSHAP's float32 least
        # squares, with its endpoints weighing 1e6 against 1, magnifies that to about 1e-3 of the map's scale
        tolerance = 1e-5 if name == "lime" else 3e-3 * scale
        np.testing.assert_allclose(ours[i], theirs.numpy(), rtol=1e-3, atol=tolerance)


def test_kernelshap_masks_follow_the_shapley_kernel():
    """All on, all off, then sizes k with p(k) = (M - 1) / (k (M - k)) / Z, the k features uniform."""
    features, samples = 10, 40002
    masks = SURROGATES["kernelshap"].draw(samples, features, torch.Generator().manual_seed(0))
    assert masks[0].all() and not masks[1].any()
    k = np.arange(1, features)
    expected = (features - 1) / (k * (features - k))
    expected /= expected.sum()
    sizes = np.bincount(masks[2:].sum(1).numpy(), minlength=features + 1)[1:features] / (samples - 2)
    np.testing.assert_allclose(sizes, expected, atol=0.01)
    np.testing.assert_allclose(masks[2:].float().mean(0).numpy(), 0.5, atol=0.02)  # no feature favoured
    weights = SURROGATES["kernelshap"].weigh(masks[:4]).numpy()
    assert weights[0] == weights[1] == 1e6 and weights[2] == weights[3] == 1.0


def test_kernelshap_is_complete():
    """The features' Shapley values sum to f(x) - f(baseline) (the endpoints weigh 1e6)."""
    torch.manual_seed(1)
    model = create_model("small-cnn", 1, 3, (16, 16)).eval()
    x = torch.randn(4, 1, 16, 16) * 2
    baselines = torch.zeros_like(x)
    target = torch.tensor([0, 1, 2, 0])
    mask = feature_mask(x, "grid")[:, 0]
    coefs = surrogate_coefficients("kernelshap", model, x, target, baselines, mask, samples=300, batch=64)
    with torch.no_grad():
        expected = (model(x) - model(baselines)).gather(1, target[:, None])[:, 0].numpy()
    got = np.array([c.sum() for c in coefs])
    assert np.abs(expected).min() > 1e-3
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("name", ["lime", "kernelshap"])
def test_the_seed_decides_the_maps(name):
    torch.manual_seed(0)
    model = create_model("tiny-cnn", 1, 3, (12, 12)).eval()
    x = torch.randn(2, 1, 12, 12)
    target = torch.tensor([0, 2])
    first, again, other = (METHODS[name](Settings(samples=40, seed=seed)).attribute(model, x, target)
                           for seed in (0, 0, 1))
    torch.manual_seed(123)  # the global RNG plays no part
    np.testing.assert_array_equal(first.numpy(), again.numpy())
    assert not np.allclose(first.numpy(), other.numpy())


def test_lime_weights_are_lime_images_kernel():
    """lime_image.LimeImageExplainer: sqrt(exp(-d^2 / 0.25^2)), d the cosine distance (sklearn's
    pairwise_distances) of each on/off row to the all-on row; computed here from that formula alone."""
    from sklearn.metrics import pairwise_distances

    masks = SURROGATES["lime"].draw(50, 12, torch.Generator().manual_seed(0))
    masks[0] = 1  # lime's first row is the image itself
    masks[1] = 0  # nothing on: sklearn's cosine distance is 1
    masks[2, :] = 0
    masks[2, 0] = 1  # one feature of 12 on
    data = masks.numpy()
    distances = pairwise_distances(data, np.ones((1, data.shape[1])), metric="cosine").ravel()
    expected = np.sqrt(np.exp(-(distances ** 2) / 0.25 ** 2))
    got = SURROGATES["lime"].weigh(masks).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)
    assert got[0] == pytest.approx(1.0) and got[2] == pytest.approx(np.exp(-0.5 * (1 - 12 ** -0.5) ** 2 / 0.0625))
