"""How faithful a method's maps are on the user's model: deletion/insertion AUC and the randomization check.

Deletion and insertion (Petsiuk et al., RISE, 2018): remove the most-attributed pixels first (replace them by
a blurred copy) and follow the target class's probability; or insert them first into the blurred image. A
faithful map makes the probability fall fast (deletion AUC below a random map's) and rise fast (insertion
AUC above it). The cascading randomization check (Adebayo et al., 2018): re-initialize the layers from the
logits down, recompute the signed maps and take the Spearman rank correlation with the original ones; a map that
explains the model must change, so a method passes when the correlation with every layer random is < 0.5.
"""
from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from .baselines import blurred
from .registry import Method, library_notes_hidden, seeded

STEPS = 20  # deletion/insertion curves have STEPS + 1 points, 1/STEPS of the pixels apart
_trapezoid = getattr(np, "trapezoid", None) or np.trapz  # numpy < 2 names it trapz
PASS_BELOW = 0.5  # Spearman correlation with every layer random
RANDOMIZATION_IMAGES = 20  # the check recomputes every map once per step: on the first this many images
MAX_CASCADE_STEPS = 6  # deep models: randomize in this many blocks of layers, from the logits down


def random_maps(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).random(shape)).float()


def _order(maps: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """(N, H, W) -> (N, H*W) pixel indices, most attributed first; ties (e.g. Grad-CAM's zeros) in random order."""
    flat = maps.detach().flatten(1).double().cpu().numpy()
    jitter = np.random.default_rng(seed).random(flat.shape)
    return torch.from_numpy(np.stack([np.lexsort((j, -f)) for f, j in zip(flat, jitter)]))


def deletion_insertion(model: nn.Module, inputs: torch.Tensor, target: torch.Tensor, maps: torch.Tensor,
                       batch: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Per image (N,): the area under the target probability as the pixels are deleted, and as inserted.

    inputs: (N, C, H, W) normalized; maps: (N, H, W). The area is the trapezoid rule over the fraction of
    pixels changed, 0 to 1, so both lie in [0, 1]. Images go in groups whose STEPS + 1 variants fill a batch.
    """
    per_group = max(1, batch // (STEPS + 1))
    order = _order(maps)  # (N, H*W), for all images at once: the tie-breaking does not depend on the groups
    deletion, insertion = [], []
    for lo in range(0, len(inputs), per_group):
        part = slice(lo, lo + per_group)
        d, i = _curves(model, inputs[part], target[part], order[part])
        deletion.append(d)
        insertion.append(i)
    return np.concatenate(deletion), np.concatenate(insertion)


def _curves(model: nn.Module, inputs: torch.Tensor, target: torch.Tensor, order: torch.Tensor):
    """Deletion and insertion areas (n,) of a group of images; order: (n, H*W) pixels, most attributed first."""
    n, channels, height, width = inputs.shape
    counts = np.ceil(np.linspace(0, 1, STEPS + 1) * height * width).astype(int)  # pixels changed at each step
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(height * width).expand(n, -1))  # each pixel's place in the order
    changed = rank[:, None, :] < torch.from_numpy(counts)[None, :, None]  # (n, STEPS+1, H*W)
    changed = changed.reshape(n, STEPS + 1, 1, height, width).to(inputs.device)
    x, b = inputs[:, None], blurred(inputs)[:, None]  # (n, 1, C, H, W)
    areas = []
    for start_image, removed in ((x, b), (b, x)):  # deletion: x -> blur; insertion: blur -> x
        stepped = torch.where(changed, removed, start_image).reshape(-1, channels, height, width)
        with torch.no_grad():
            logits = model(stepped)
        probs = torch.softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), 1)
        probs = probs.reshape(n, STEPS + 1, -1)
        curve = probs.gather(2, target.to(probs.device)[:, None, None].expand(n, STEPS + 1, 1))[..., 0]
        areas.append(_trapezoid(curve.cpu().numpy(), counts / (height * width), axis=1))
    return areas[0], areas[1]


def parametric_layers(model: nn.Module) -> list[str]:
    """Names of the modules that hold parameters of their own, from the logits down (the reverse of registration)."""
    return [name for name, module in model.named_modules()
            if name and any(True for _ in module.parameters(recurse=False))][::-1]


def _reinitialize(module: nn.Module, generator: torch.Generator) -> None:
    if hasattr(module, "reset_parameters"):
        device = next(module.parameters()).device
        with seeded(int(torch.randint(0, 2**31, (1,), generator=generator)), device):
            module.reset_parameters()
    else:
        for parameter in module.parameters(recurse=False):
            nn.init.normal_(parameter.data, std=0.02)


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over images of the Spearman rank correlation of two (N, H, W) maps; a constant map counts as 0."""
    from scipy.stats import spearmanr

    values = []
    for x, y in zip(a.detach().flatten(1).cpu().numpy(), b.detach().flatten(1).cpu().numpy()):
        rho = spearmanr(x, y).statistic if x.std() > 0 and y.std() > 0 else 0.0
        values.append(0.0 if np.isnan(rho) else float(rho))
    return float(np.mean(values))


def randomization_check(method: Method, model: nn.Module, inputs: torch.Tensor, target: torch.Tensor,
                        baselines: torch.Tensor | None, seed: int = 0) -> list[dict]:
    """[{"layers": "fc" or "layer4.1.conv2 .. fc", "spearman": rho, "spearman_abs": rho}, ...], one more block
    random each step.

    Both compare `method.signed_attribute` maps (the |gradient| methods: the signed gradient) with the trained
    model's: "spearman" as they are, the criterion; "spearman_abs" of their absolute values, which Adebayo et
    al. also report. The second stays high whenever a map is zero, or small, at the same pixels for any
    weights: integrated gradients from a black image is exactly 0 on every black pixel.
    """
    layers = parametric_layers(model)
    blocks = np.array_split(np.arange(len(layers)), min(MAX_CASCADE_STEPS, len(layers)))
    with library_notes_hidden():
        original = method.signed_attribute(model, inputs, target, baselines).detach()
    randomized = copy.deepcopy(model).eval()
    modules = dict(randomized.named_modules())
    generator = torch.Generator().manual_seed(seed)
    steps = []
    for block in blocks:
        for i in block:
            _reinitialize(modules[layers[i]], generator)
        with library_notes_hidden():
            maps = method.signed_attribute(randomized, inputs, target, baselines).detach()
        down_to = layers[block[-1]]
        steps.append({"layers": f"{layers[0]} .. {down_to}" if down_to != layers[0] else down_to,
                      "spearman": spearman(original, maps), "spearman_abs": spearman(original.abs(), maps.abs())})
    return steps


def score_methods(model: nn.Module, inputs: torch.Tensor, target: torch.Tensor, baselines: torch.Tensor | None,
                  methods: list[Method], maps: dict[str, torch.Tensor], seconds: dict[str, float],
                  batch: int = 256) -> list[dict]:
    """One row per method (and one for a random map): deletion/insertion AUC, randomization, time per image."""
    shape = maps[methods[0].name].shape  # (N, H, W)
    random_deletion, random_insertion = deletion_insertion(model, inputs, target, random_maps(shape), batch)
    few = slice(0, RANDOMIZATION_IMAGES)
    rows = [{"method": "random map", "deletion_auc": float(random_deletion.mean()),
             "insertion_auc": float(random_insertion.mean())}]
    for method in methods:
        deletion, insertion = deletion_insertion(model, inputs, target, maps[method.name], batch)
        steps = randomization_check(method, model, inputs[few], target[few],
                                    None if baselines is None else baselines[few])
        rows.append({"method": method.name, "deletion_auc": float(deletion.mean()),
                     "insertion_auc": float(insertion.mean()),
                     "faithful": bool(deletion.mean() < random_deletion.mean()
                                      and insertion.mean() > random_insertion.mean()),
                     "randomization": steps, "spearman_all_random": steps[-1]["spearman"],
                     "spearman_abs_all_random": steps[-1]["spearman_abs"],
                     "passes_randomization": steps[-1]["spearman"] < PASS_BELOW,
                     "seconds_per_image": seconds[method.name]})
    for row in rows:
        row["images"] = len(inputs)
        if "randomization" in row:
            row["randomization_images"] = len(inputs[few])
    return rows


COLUMNS = ["method", "deletion AUC (lower: faithful)", "insertion AUC (higher: faithful)", "beats random",
           "Spearman, layers randomized from the logits down", "passes randomization (< 0.5)",
           "Spearman of |maps|, all random", "ms per image"]


def table_cells(rows: list[dict]) -> list[list[str]]:
    """The evaluation table as strings, one list per row in COLUMNS' order (for the terminal and Markdown)."""
    cells = []
    for row in rows:
        if "randomization" not in row:
            cells.append([row["method"], f"{row['deletion_auc']:.3f}", f"{row['insertion_auc']:.3f}", "", "", "", "",
                          ""])
            continue
        cascade = " → ".join(f"{step['spearman']:.2f}" for step in row["randomization"])
        cells.append([row["method"], f"{row['deletion_auc']:.3f}", f"{row['insertion_auc']:.3f}",
                      "yes" if row["faithful"] else "no", cascade, "yes" if row["passes_randomization"] else "no",
                      f"{row['spearman_abs_all_random']:.2f}", f"{row['seconds_per_image'] * 1000:.1f}"])
    return cells


def markdown_table(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in table_cells(rows)]
    return "\n".join(lines) + "\n"
