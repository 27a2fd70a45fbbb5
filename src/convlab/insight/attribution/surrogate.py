"""LIME and KernelSHAP with all perturbations drawn and evaluated at once; captum's classes are the reference.

Why this hand-writes captum's sampling: captum draws each on/off mask, builds each perturbed input and
computes each weight in a Python loop, one sample at a time, and fits one surrogate per image. On a small
CNN that loop costs as much as the forward passes, so batching captum's forward passes
(`perturbations_per_eval`) gains little. Here the masks of all images are one (N, S, F) tensor, the
perturbed inputs are built by one indexed select against the baseline per forward batch, the forward
passes run in large batches under `torch.inference_mode`, and the surrogate is fit by sklearn's weighted
linear models exactly as captum's `SkLearnLasso` / `SkLearnLinearRegression` call them. The masks follow
captum's samplers (LIME: the same global-RNG Bernoulli draws; KernelSHAP: the Shapley kernel's
distribution of sizes) and the tests check that captum, given the same masks, gives the same maps.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from threadpoolctl import threadpool_limits

SHAP_ENDPOINT_WEIGHT = 1_000_000.0  # captum's KernelShap.inf_weight: the all-on and all-off masks pin the fit
LIME_KERNEL_WIDTH = 0.25  # lime_image's kernel width on the cosine distance


@dataclass(frozen=True)
class Surrogate:
    """How one surrogate method draws masks, weighs them and fits: the rest is shared."""

    draw: Callable[[int, int, torch.Generator], torch.Tensor]  # (samples, features, rng) -> (S, F) 0/1 masks
    weigh: Callable[[torch.Tensor], torch.Tensor]  # (..., F) masks -> (...,) sample weights
    fit: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]  # X (S, F), y (S,), w (S,) -> coef (F,)


def lime_draw(samples: int, features: int, generator: torch.Generator) -> torch.Tensor:
    """Each feature on with probability 1/2, as captum's default_perturb_func draws them."""
    return torch.bernoulli(torch.full((samples, features), 0.5), generator=generator).long()


def lime_weigh(on: torch.Tensor) -> torch.Tensor:
    """lime_image's kernel sqrt(exp(-d^2 / 0.25^2)), d the cosine distance of the on/off vector to all-on.

    The square root is lime's (LimeImageExplainer's default kernel): it halves the exponent, so masks far
    from all-on weigh more than under exp(-d^2 / w^2).
    """
    on = on.float()
    cosine = on.sum(-1) / (on.norm(dim=-1) * on.shape[-1] ** 0.5 + 1e-12)
    return torch.sqrt(torch.exp(-((1 - cosine) ** 2) / LIME_KERNEL_WIDTH ** 2))


def lime_fit(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """captum's default LIME surrogate, SkLearnLasso(alpha=0.01): sklearn's Lasso with sample weights."""
    from sklearn.linear_model import Lasso

    return Lasso(alpha=0.01).fit(x, y, sample_weight=w).coef_


def shap_draw(samples: int, features: int, generator: torch.Generator) -> torch.Tensor:
    """captum's kernel_shap_perturb_generator at once: all on, all off, then k on features for the rest with
    p(k) proportional to (M - 1) / (k (M - k)) and the k chosen uniformly (the top k of normal draws)."""
    if features < 2:  # no size between all off and all on
        return (torch.arange(samples) % 2 == 0).long()[:, None].expand(samples, features).clone()
    sizes = torch.arange(features, dtype=torch.float)
    probs = torch.tensor(float(features - 1)) / (sizes * (features - sizes))
    probs[0] = 0.0
    rest = max(0, samples - 2)
    k = torch.multinomial(probs, rest, replacement=True, generator=generator) if rest else torch.zeros(0).long()
    ranks = torch.randn(rest, features, generator=generator).argsort(-1).argsort(-1)  # uniform permutations
    chosen = (ranks >= features - k[:, None]).long()
    ends = torch.stack([torch.ones(features, dtype=torch.long), torch.zeros(features, dtype=torch.long)])
    return torch.cat([ends, chosen])[:samples]


def shap_weigh(on: torch.Tensor) -> torch.Tensor:
    """The Shapley kernel as captum applies it: sizes are drawn by the kernel, so every mask weighs 1, except
    all-off and all-on (infinite in theory) which weigh 1e6."""
    count = on.sum(-1)
    ends = (count == 0) | (count == on.shape[-1])
    return torch.where(ends, SHAP_ENDPOINT_WEIGHT, 1.0)


def shap_fit(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """captum's KernelShap surrogate, SkLearnLinearRegression: ordinary weighted least squares with an intercept."""
    from sklearn.linear_model import LinearRegression

    return LinearRegression().fit(x, y, sample_weight=w).coef_


SURROGATES = {"lime": Surrogate(lime_draw, lime_weigh, lime_fit),
              "kernelshap": Surrogate(shap_draw, shap_weigh, shap_fit)}


def draw_masks(surrogate: Surrogate, features: list[int], samples: int, generator: torch.Generator) -> torch.Tensor:
    """(N, S, max F) masks, image after image, zero past each F."""
    on = torch.zeros(len(features), samples, max(features), dtype=torch.long)
    for i, count in enumerate(features):
        on[i, :, :count] = surrogate.draw(samples, count, generator)
    return on


def perturbed_outputs(model, inputs: torch.Tensor, baselines: torch.Tensor, mask: torch.Tensor, on: torch.Tensor,
                      target: torch.Tensor, batch: int) -> torch.Tensor:
    """y_target of every perturbed input (N, S): pixel p of sample s of image n is the input's where
    on[n, s, mask[n, p]] else the baseline's; built and evaluated `batch` at a time."""
    n, samples, _ = on.shape
    pixels = mask.flatten(1)  # (N, H*W) feature id of each pixel, shared by the channels
    image_of = torch.arange(n, device=inputs.device).repeat_interleave(samples)  # flat sample -> its image
    flat_on = on.reshape(n * samples, -1).to(inputs.device)
    outputs = torch.empty(n * samples)
    with torch.inference_mode():
        for lo in range(0, n * samples, batch):
            rows = image_of[lo:lo + batch]
            keep = flat_on[lo:lo + batch].gather(1, pixels[rows]).bool()  # (B, H*W)
            keep = keep.view(len(rows), 1, *inputs.shape[2:])
            perturbed = torch.where(keep, inputs[rows], baselines[rows])
            logits = model(perturbed)
            outputs[lo:lo + batch] = logits.gather(1, target.to(inputs.device)[rows, None])[:, 0].float().cpu()
    return outputs.view(n, samples)


def surrogate_coefficients(name: str, model, inputs: torch.Tensor, target: torch.Tensor, baselines: torch.Tensor,
                           mask: torch.Tensor, samples: int, batch: int, seed: int = 0) -> list[np.ndarray]:
    """Each image's surrogate weights, one per feature: mask (N, H, W) holds ids 0..F-1 per image."""
    surrogate = SURROGATES[name]
    features = [int(m.max()) + 1 for m in mask]
    on = draw_masks(surrogate, features, samples, torch.Generator().manual_seed(seed))
    outputs = perturbed_outputs(model, inputs, baselines, mask, on, target, batch).numpy()
    coefs = []
    # one BLAS thread: a (S, F) fit is too small to split, and on a busy CPU OpenBLAS's threads waiting for
    # each other made each KernelSHAP least squares ~20x slower (50 ms against 2 ms for 200 x 64)
    with threadpool_limits(1, user_api="blas"):
        for i, count in enumerate(features):  # one fit per image, on captum's float32 arrays
            x = on[i, :, :count]
            w = surrogate.weigh(x).float().numpy()
            coefs.append(np.asarray(surrogate.fit(x.float().numpy(), outputs[i].astype(np.float32), w)))
    return coefs


def surrogate_maps(name: str, model, inputs: torch.Tensor, target: torch.Tensor, baselines: torch.Tensor | None,
                   mask: torch.Tensor, samples: int, batch: int, seed: int = 0) -> torch.Tensor:
    """(N, H, W): each pixel gets its feature's weight, summed over the channels as captum's maps are."""
    baselines = torch.zeros_like(inputs) if baselines is None else baselines.expand_as(inputs)
    coefs = surrogate_coefficients(name, model, inputs, target, baselines, mask[:, 0].long(), samples, batch, seed)
    maps = [torch.from_numpy(c.astype(np.float32))[m[0].long().cpu()] for c, m in zip(coefs, mask)]
    return (torch.stack(maps) * inputs.shape[1]).to(inputs.device)
