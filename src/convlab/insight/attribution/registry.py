"""The registry of attribution methods: each is a small class with captum's `attribute()` signature."""
from __future__ import annotations

import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ...errors import ConvlabError


@dataclass
class Settings:
    """How hard each method works and how much it batches: one object, and one check of its ranges, for
    `convlab attribute --samples --steps`, `convlab.attribute(..., samples=, steps=)` and the web app's
    `?samples=&steps=`."""

    samples: int = 200  # perturbed inputs per image for lime and kernelshap
    steps: int = 32  # integral steps of integrated gradients
    batch: int = 64  # images per forward pass that batching aims at (IG steps, windows, perturbations)
    layer: str | None = None  # the conv layer of the CAM methods (default: the last one)
    mask: str = "grid"  # feature mask of lime and kernelshap: grid or superpixel
    seed: int = 0  # for the sampling methods: the same call gives the same maps
    # the allowed values; the upper bounds keep one call (one web request) from holding the model for minutes
    ranges: ClassVar[dict[str, tuple[int, int]]] = {"samples": (1, 2000), "steps": (1, 256)}

    def __post_init__(self):
        for name, (low, high) in self.ranges.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ConvlabError(f"--{name} must be an integer from {low} to {high}, got {value!r}")


class Method:
    """One attribution method. `attribute(model, inputs, target, baselines)` returns maps (N, H, W).

    inputs: (N, C, H, W) normalized float; target: (N,) class indices; baselines: (N, C, H, W), the input
    with its information removed (a black image for a run), or None for zeros as in captum. A map is the
    evidence for the target class at each pixel: larger means more for it.
    """

    name = ""
    summary = ""
    signed = False  # whether maps have negative values (evidence against); drawn with a diverging scale
    needs_conv = False  # the CAM methods need a Conv2d layer
    warning: str | None = None  # printed whenever the method is used
    reads: tuple[str, ...] = ()  # the Settings fields that change its maps (batch only changes the speed)

    def __init__(self, settings: Settings | None = None):
        self.settings = settings or Settings()

    def attribute(self, model: nn.Module, inputs: torch.Tensor, target: torch.Tensor,
                  baselines: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def signed_attribute(self, model: nn.Module, inputs: torch.Tensor, target: torch.Tensor,
                         baselines: torch.Tensor | None = None) -> torch.Tensor:
        """The map before any absolute value is taken for display: what the randomization check compares.

        The |gradient| maps override it with the signed gradient; a magnitude's ranks follow where the
        image is (which units its pixels switch on) whatever the weights, so they cannot tell the models apart.
        """
        return self.attribute(model, inputs, target, baselines)


METHODS: dict[str, type[Method]] = {}


def register_method(name: str):
    def add(cls: type[Method]) -> type[Method]:
        cls.name = name
        METHODS[name] = cls
        return cls

    return add


def parse_methods(spec: str | list[str] | tuple[str, ...]) -> list[str]:
    """'gradcam,ig' or ['gradcam', 'ig'] -> checked names; an unknown name lists the known ones."""
    names = [n.strip() for n in (spec.split(",") if isinstance(spec, str) else spec) if n.strip()]
    if not names:
        raise ConvlabError(f"--method: name at least one method of {', '.join(METHODS)}")
    for name in names:
        if name not in METHODS:
            import difflib

            close = difflib.get_close_matches(name, list(METHODS), n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            raise ConvlabError(f"--method {name!r} is not an attribution method; {hint}"
                               f"methods: {', '.join(METHODS)}")
    return list(dict.fromkeys(names))


@contextmanager
def seeded(seed: int, device: torch.device):
    """Seed torch's global RNG on the CPU and `device` for a library that draws from it (captum's noise,
    reset_parameters), and give the caller's RNG state back afterwards."""
    cuda = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.random.default_generator.manual_seed(seed)
        for each in cuda:
            with torch.cuda.device(each):
                torch.cuda.manual_seed(seed)
        yield


@contextmanager
def library_notes_hidden():
    """captum warns about setting requires_grad and hooking ReLUs on every call: notes, not problems."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield
