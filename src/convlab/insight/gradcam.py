"""Grad-CAM (Selvaraju et al. 2017) with torch hooks: which pixels made the model pick a class.

Written with a forward hook and autograd instead of a library: it is a dozen lines, works on any
nn.Module (presets and torchvision models alike) and adds no dependency.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.decode import decode, fit, open_image, working_size
from ..errors import ConvlabError
from ..evaluate.pictures import displayed
from ..evaluate.plots import new_figure
from ..models.inference import softmax
from ..run import Run
from .outputs import output_stems


def conv_layers(model: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    """Every Conv2d of the model with its qualified name, in the order the modules were registered."""
    return [(name, module) for name, module in model.named_modules() if isinstance(module, nn.Conv2d)]


def find_layer(model: nn.Module, name: str | None) -> tuple[str, nn.Module]:
    """The layer called `name` (e.g. 'features.3', 'layer4.1.conv2'), or the last conv layer when None."""
    if name is None:
        convs = conv_layers(model)
        if not convs:
            raise ConvlabError(f"{type(model).__name__} has no Conv2d layer; pass --layer NAME")
        return convs[-1]
    modules = dict(model.named_modules())
    if name not in modules or name == "":
        import difflib

        names = [n for n, _ in conv_layers(model)]
        close = difflib.get_close_matches(name, names, n=3)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise ConvlabError(f"--layer {name!r}: no such layer in {type(model).__name__}; {hint}"
                           f"conv layers: {', '.join(names[-6:])}")
    return name, modules[name]


@contextmanager
def _no_inplace(model: nn.Module):
    """Turn off in-place activations for a moment, so a hooked output is not overwritten by the next ReLU."""
    changed = [m for m in model.modules() if getattr(m, "inplace", False) is True]
    for module in changed:
        module.inplace = False
    try:
        yield
    finally:
        for module in changed:
            module.inplace = True


@dataclass
class CamResult:
    """heatmaps: (N, H, W) in [0, 1] at the input's size; raw: (N, h, w) before upsampling and scaling."""

    heatmaps: np.ndarray
    raw: np.ndarray
    classes: np.ndarray  # (N,) the class each map explains
    probs: np.ndarray  # (N, K) the probabilities of the logits (the run's: softmax, or a sigmoid per label)
    layer: str


def layer_gradients(model: nn.Module, inputs: torch.Tensor, layer: str | None = None,
                    class_index: int | list[int] | None = None):
    """One forward and backward pass: (layer name, activations A (N, K, h, w), dy_c/dA, logits, targets).

    y_c is the logit of the predicted class or of `class_index` (one per image, or one for all).
    """
    name, module = find_layer(model, layer)
    captured: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda _m, _i, output: captured.append(output))
    was_training = model.training
    model.eval()
    try:
        with _no_inplace(model), torch.enable_grad():
            logits = model(inputs)
            if not captured or captured[-1].dim() != 4:
                raise ConvlabError(f"--layer {name}: its output is not a (N, C, H, W) feature map")
            activations = captured[-1]  # (N, K, h, w)
            if class_index is None:
                targets = logits.argmax(1)
            else:
                targets = torch.as_tensor(class_index, device=logits.device).expand(len(logits))
            score = logits.gather(1, targets[:, None]).sum()
            (grads,) = torch.autograd.grad(score, activations)
    finally:
        handle.remove()
        model.train(was_training)
    return name, activations.detach(), grads, logits.detach(), targets


def upsample_and_scale(cam: torch.Tensor, size) -> np.ndarray:
    """(N, 1, h, w) non-negative maps -> (N, H, W) bilinearly upsampled to `size`, each divided by its maximum."""
    up = F.interpolate(cam, size=size, mode="bilinear", align_corners=False)[:, 0]  # (N, H, W)
    peak = up.flatten(1).max(1).values.clamp_min(1e-12)[:, None, None]
    return (up / peak).cpu().numpy()


def grad_cam(model: nn.Module, inputs: torch.Tensor, layer: str | None = None,
             class_index: int | list[int] | None = None, probabilities=None) -> CamResult:
    """Grad-CAM of `inputs` (N, C, H, W, normalized float) for the predicted class or `class_index`;
    `probabilities` turns the logits into the probabilities shown (a run's: its temperature, a multi-label run's
    sigmoids; default the softmax).

    With A (N, K, h, w) the layer's output and y_c the class logit: weights a_k = mean over h, w of
    dy_c/dA_k; map = ReLU(sum_k a_k A_k), upsampled bilinearly to (H, W) and divided by its maximum.
    """
    name, activations, grads, logits, targets = layer_gradients(model, inputs, layer, class_index)
    weights = grads.mean(dim=(2, 3), keepdim=True)  # (N, K, 1, 1)
    cam = F.relu((weights * activations).sum(1, keepdim=True))  # (N, 1, h, w)
    heatmaps = upsample_and_scale(cam, inputs.shape[2:])
    logits = logits.float().cpu().numpy()
    probs = softmax(logits) if probabilities is None else probabilities(logits)
    return CamResult(heatmaps, cam[:, 0].cpu().numpy(), targets.cpu().numpy(), probs, name)


def run_grad_cam(run: Run, images: np.ndarray, layer: str | None = None,
                 class_index: int | None = None) -> CamResult:
    """Grad-CAM for a run on (N, C, H, W) uint8 images already in the run's size and channels."""
    batch = torch.from_numpy(images).to(run.device)
    run.model.to(run.device)
    return grad_cam(run.model, run.preprocess.norm.apply(batch), layer, class_index, run.probabilities)


def class_index_of(run: Run, label: str | None, option: str = "--class") -> int | None:
    """The index of class `label` of the run (None stays None: each image's predicted class); `option` names the
    flag in the error. A multi-label run has no one predicted class: it needs the label."""
    if label is None:
        if run.several_labels:
            raise ConvlabError(f"run {run.path} is multi-label: an image may have several labels, so name the one to "
                               f"explain with --target LABEL (one of {', '.join(run.classes[:12])}"
                               f"{' ...' if len(run.classes) > 12 else ''})")
        return None
    if label not in run.classes:
        shown = ", ".join(run.classes[:12]) + (" ..." if len(run.classes) > 12 else "")
        raise ConvlabError(f"{option} {label!r} is not a class of run {run.path}; its classes are {shown}")
    return run.classes.index(label)


def overlay(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.45, cmap: str = "jet") -> np.ndarray:
    """image: (H, W, 3) or (H, W) uint8; heatmap: (h, w) in [0, 1] -> (H', W', 3) uint8, drawn at display size:
    the image shrunk to at most DISPLAY_MAX pixels on its long side, the heatmap resized to it."""
    import matplotlib

    image = displayed(image)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    height, width = image.shape[:2]
    if heatmap.shape != (height, width):
        heat = torch.from_numpy(np.ascontiguousarray(heatmap, dtype=np.float32))[None, None]
        heatmap = F.interpolate(heat, size=(height, width), mode="bilinear", align_corners=False)[0, 0].numpy()
    colour = matplotlib.colormaps[cmap](np.clip(heatmap, 0, 1))[:, :, :3] * 255.0
    return np.clip((1 - alpha) * image + alpha * colour, 0, 255).astype(np.uint8)


def save_cam_figure(original: np.ndarray, heatmap: np.ndarray, title: str, path: Path) -> None:
    """Three panels: the image, the heatmap, and the overlay; `original` is (H, W[, 3]) uint8 at any size."""
    fig = new_figure((8.4, 3.1))
    axes = fig.subplots(1, 3)
    gray = original.ndim == 2
    axes[0].imshow(original, cmap="gray" if gray else None, interpolation="nearest")
    axes[0].set_title("image")
    axes[1].imshow(heatmap, cmap="jet", vmin=0, vmax=1, interpolation="bilinear")
    axes[1].set_title("Grad-CAM")
    axes[2].imshow(overlay(original, heatmap), interpolation="nearest")
    axes[2].set_title("overlay")
    for ax in axes:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def gradcam_files(run: Run, paths: list[Path], out: Path, layer: str | None = None,
                  class_label: str | None = None) -> list[Path]:
    """Grad-CAM figures for image files: one OUT/<name>-gradcam.png per image (output_stems: distinct even for
    cat/001.png and dog/001.png); returns their paths."""
    target = class_index_of(run, class_label)
    channels, size = run.preprocess.channels, tuple(run.preprocess.size)
    inputs, originals = [], []
    for path in paths:  # one decode per file (EXIF rotation applied): the model's input and the image shown
        with open_image(path) as opened:
            decoded = decode(opened, working_size(size))
            inputs.append(fit(decoded, channels, size))
            originals.append(displayed(decoded, channels))
    images = np.stack(inputs)
    result = run_grad_cam(run, images, layer, target)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for i, (path, stem) in enumerate(zip(paths, output_stems(paths))):
        cls = int(result.classes[i])
        predicted = int(result.probs[i].argmax())
        title = (f"{Path(path).name}: Grad-CAM for '{run.classes[cls]}' (p={result.probs[i, cls]:.3f}); "
                 f"predicted '{run.classes[predicted]}'; layer {result.layer}")
        target_path = out / f"{stem}-gradcam.png"
        save_cam_figure(originals[i], result.heatmaps[i], title, target_path)
        written.append(target_path)
    return written
