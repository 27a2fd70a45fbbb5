"""Feature maps of every conv layer for one image, and the first layer's filters, as PNG grids."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from ..data.decode import load_image
from ..evaluate.plots import new_figure
from ..run import Run
from .gradcam import _no_inplace, conv_layers

MAX_MAPS = 64  # channels shown per layer; wider layers show their first 64


def tile(maps: np.ndarray, columns: int | None = None, pad: int = 1) -> np.ndarray:
    """(N, h, w) -> one (rows*(h+pad)-pad, columns*(w+pad)-pad) array; each map scaled to [0, 1], gaps NaN."""
    n, h, w = maps.shape
    columns = columns or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / columns))
    grid = np.full((rows * (h + pad) - pad, columns * (w + pad) - pad), np.nan)
    for i, m in enumerate(maps):
        low, high = float(m.min()), float(m.max())
        scaled = (m - low) / (high - low) if high > low else np.zeros_like(m)
        r, c = divmod(i, columns)
        grid[r * (h + pad):r * (h + pad) + h, c * (w + pad):c * (w + pad) + w] = scaled
    return grid


def capture_feature_maps(model: torch.nn.Module, x: torch.Tensor) -> list[tuple[str, torch.nn.Conv2d, np.ndarray]]:
    """Run x (1, C, H, W) through the model; return (name, layer, output (K, h, w)) for every conv layer."""
    found: list[tuple[str, torch.nn.Conv2d, np.ndarray]] = []
    handles = [module.register_forward_hook(
        lambda m, _i, out, name=name: found.append((name, m, out[0].detach().cpu().numpy())))
        for name, module in conv_layers(model)]
    model.eval()
    try:
        with _no_inplace(model), torch.inference_mode():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return found


def _save_grid(grid: np.ndarray, title: str, path: Path, cmap: str = "viridis") -> None:
    import matplotlib

    height, width = grid.shape[:2]
    scale = min(9.0 / max(width, 1), 9.0 / max(height, 1))
    fig = new_figure((max(3.0, width * scale), max(2.0, height * scale) + 0.5))
    ax = fig.subplots()
    # The NaN gaps between tiles get their own colour, so they never pass for pixels.
    ax.imshow(grid, cmap=matplotlib.colormaps[cmap].with_extremes(bad="#b0c4de"), interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def first_layer_filters(layer: torch.nn.Conv2d) -> np.ndarray:
    """The first conv's weights as images: (K, k, k) per-filter gray, or (K, k, k, 3) colour for RGB input."""
    weights = layer.weight.detach().cpu().float().numpy()  # (K, C, k, k)
    if weights.shape[1] == 3:
        low, high = weights.min(), weights.max()
        return ((weights - low) / max(high - low, 1e-12)).transpose(0, 2, 3, 1)
    return weights.mean(axis=1)


def write_feature_maps(run: Run, image_path: Path, out: Path) -> list[Path]:
    """OUT/features-NN-<layer>.png for each conv layer and OUT/filters.png; returns the written paths."""
    image = load_image(image_path, run.preprocess.channels, tuple(run.preprocess.size))
    x = run.preprocess.norm.apply(torch.from_numpy(image[None]).to(run.device))
    run.model.to(run.device)
    captured = capture_feature_maps(run.model, x)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for index, (name, layer, maps) in enumerate(captured, start=1):
        shown = maps[:MAX_MAPS]
        more = f", first {MAX_MAPS} of {len(maps)}" if len(maps) > MAX_MAPS else ""
        title = (f"{name}: Conv2d {layer.in_channels}->{layer.out_channels}, {layer.kernel_size[0]}x"
                 f"{layer.kernel_size[1]}; {len(maps)} maps of {maps.shape[1]}x{maps.shape[2]}{more}")
        path = out / f"features-{index:02d}-{re.sub(r'[^A-Za-z0-9]+', '_', name)}.png"
        _save_grid(tile(shown), title, path)
        written.append(path)
    if captured:
        name, layer, _ = captured[0]
        filters = first_layer_filters(layer)[:MAX_MAPS]
        if filters.ndim == 4:  # colour filters: tile each channel-last image by hand
            k = filters.shape[1]
            columns = int(np.ceil(np.sqrt(len(filters))))
            rows = int(np.ceil(len(filters) / columns))
            grid = np.ones((rows * (k + 1) - 1, columns * (k + 1) - 1, 3))
            for i, f in enumerate(filters):
                r, c = divmod(i, columns)
                grid[r * (k + 1):r * (k + 1) + k, c * (k + 1):c * (k + 1) + k] = f
        else:
            grid = tile(filters)
        path = out / "filters.png"
        _save_grid(grid, f"{name}: the {len(filters)} filters of the first conv layer", path, cmap="gray")
        written.append(path)
    return written
