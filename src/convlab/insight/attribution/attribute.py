"""Attribution for a run: load its images, compute each chosen method's maps, score them, write the files."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ...data.decode import load_image
from ...errors import ConvlabError
from ...run import Run
from ..gradcam import class_index_of
from ..outputs import output_stems
from .evaluate import markdown_table, score_methods
from .figure import method_scales, save_figure
from .methods import working_methods
from .registry import METHODS, Method, Settings, library_notes_hidden, parse_methods

CHUNK = 32  # images attributed together (the methods batch their own perturbations within a chunk)
LIBRARY_ERRORS = (RuntimeError, ValueError, AssertionError, NotImplementedError, TypeError, IndexError)


@dataclass
class Attributions:
    """The maps of each method for N images, with what they explain and what they cost."""

    names: list[str]  # one per image, distinct: its file's stem (output_stems), or '#i' for arrays
    images: np.ndarray  # (N, C, H, W) uint8 in the run's size
    targets: np.ndarray  # (N,) the class each map explains
    probs: np.ndarray  # (N, classes)
    maps: dict[str, np.ndarray]  # method -> (N, H, W)
    seconds_per_image: dict[str, float]
    signed: dict[str, bool]
    evaluation: list[dict] | None = None
    files: list[Path] = field(default_factory=list)


def attribution_methods(spec, settings: Settings, log: Callable[[str], None] = print) -> list[Method]:
    methods = [METHODS[name](settings) for name in parse_methods(spec)]
    for method in methods:
        if method.warning:
            log(f"warning: {method.warning}")
    return methods


def compute_maps(model, inputs: torch.Tensor, targets: torch.Tensor, baselines: torch.Tensor | None,
                 methods: list[Method]) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """Every method's maps (N, H, W) on `inputs` in chunks, and its seconds per image."""
    maps, seconds = {}, {}
    for method in methods:
        start, parts = time.perf_counter(), []
        for lo in range(0, len(inputs), CHUNK):
            part = slice(lo, lo + CHUNK)
            parts.append(_attribute_one(method, model, inputs[part], targets[part],
                                        None if baselines is None else baselines[part]))
        maps[method.name] = torch.cat(parts)
        seconds[method.name] = (time.perf_counter() - start) / len(inputs)
    return maps, seconds


def _attribute_one(method: Method, model, inputs, targets, baselines) -> torch.Tensor:
    try:
        with library_notes_hidden():
            return method.attribute(model, inputs, targets, baselines).detach().float().cpu()
    except ConvlabError:
        raise
    except ImportError as err:
        raise ConvlabError(f"{method.name} needs {err.name or 'captum and zennit'}: "
                           f"pip install -e '.[attribution]' in the convlab folder") from None
    except LIBRARY_ERRORS as err:
        text = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise ConvlabError(f"{method.name} cannot attribute {type(model).__name__}: {text}; methods that work on "
                           f"this model: {working_methods(model, without=method.name)}") from None


def load_images(run: Run, inputs) -> tuple[list[str], np.ndarray]:
    """Paths (files) or an (N, C, H, W) uint8 array -> names and images in the run's size and channels."""
    if isinstance(inputs, np.ndarray):
        return [f"#{i}" for i in range(len(inputs))], inputs
    paths = [Path(p) for p in inputs]
    size = tuple(run.preprocess.size)
    return output_stems(paths), np.stack([load_image(p, run.preprocess.channels, size) for p in paths])


def attribute(run: Run, inputs, method: str | list[str] = "gradcam", target: str | None = None,
              out: str | Path | None = None, evaluate: bool = False, settings: Settings | None = None,
              log: Callable[[str], None] = print, **options) -> Attributions:
    """Attribute a run's predictions on image files (or an (N, C, H, W) uint8 array) with each method.

    target: a class label to explain (default: each image's predicted class). out: a folder for one PNG
    per image (the image and each map) and the raw maps as .npy. evaluate: score each method (deletion
    and insertion AUC against a random map, the randomization check) and write evaluation.json/.md to out.
    options: fields of Settings by the CLI's names (samples=, steps=, layer=, mask=, seed=), over `settings`.
    """
    settings = replace(settings or Settings(), **options)  # replace checks the ranges again
    methods = attribution_methods(method, settings, log)
    names, images = load_images(run, inputs)
    model = run.model.to(run.device).eval()
    norm = run.preprocess.norm
    batch = norm.apply(torch.from_numpy(images).to(run.device))
    black = norm.apply(torch.zeros_like(torch.from_numpy(images[:1])).to(run.device)).expand_as(batch)
    with torch.no_grad():  # the run's probabilities: its temperature, a multi-label run's sigmoids
        probs = torch.from_numpy(run.probabilities(model(batch).float().cpu().numpy())).to(batch.device)
    index = class_index_of(run, target, option="--target")
    targets = probs.argmax(1) if index is None else torch.full((len(batch),), index, device=probs.device)
    maps, seconds = compute_maps(model, batch, targets, black, methods)
    for name, value in seconds.items():
        log(f"{name}: {value * 1000:.1f} ms per image ({len(images)} images)")
    result = Attributions(names, images, targets.cpu().numpy(), probs.cpu().numpy(),
                          {name: value.numpy() for name, value in maps.items()}, seconds,
                          {m.name: m.signed for m in methods})
    if evaluate:
        result.evaluation = score_methods(model, batch, targets, black, methods, maps, seconds, settings.batch)
    if out is not None:
        result.files = write_outputs(result, run, Path(out))
    return result


def write_outputs(result: Attributions, run: Run, out: Path) -> list[Path]:
    """OUT/<name>-attribution.png per image, OUT/<name>-<method>.npy per map, and the evaluation files."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConvlabError(f"--out {out}: cannot create the folder ({err.strerror})") from None
    scales = method_scales(result.maps, result.signed)
    written = []
    for i, name in enumerate(result.names):
        stem = name.lstrip("#") or str(i)
        cls = int(result.targets[i])
        predicted = int(result.probs[i].argmax())
        title = (f"{name}: maps for '{run.classes[cls]}' (p={result.probs[i, cls]:.3f}); "
                 f"predicted '{run.classes[predicted]}'")
        image = result.images[i]
        original = image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)
        path = out / f"{stem}-attribution.png"
        save_figure(original, {m: v[i] for m, v in result.maps.items()}, scales, result.signed, title, path)
        written.append(path)
        for method, values in result.maps.items():
            np.save(out / f"{stem}-{method}.npy", values[i])
    if result.evaluation is not None:
        (out / "evaluation.json").write_text(json.dumps(result.evaluation, indent=1))
        (out / "evaluation.md").write_text(markdown_table(result.evaluation))
        written += [out / "evaluation.json", out / "evaluation.md"]
    return written
