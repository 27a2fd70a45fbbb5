"""The learning-rate finder: an exponential ramp of the rate, the smoothed loss it gives, and the suggested rates.

Leslie Smith's range test as fastai's `Learner.lr_find` runs it: train for a few hundred steps at most while the
rate grows exponentially from `start` to `end`, record the loss smoothed by a debiased exponential moving
average, stop once the smoothed loss exceeds 4x its minimum (the rate diverged), and suggest a rate from the
curve. Written here from fastai's description (its defaults, smoothing, stopping rule and two suggestion rules);
no fastai code is used. The ramp trains a throw-away model: nothing it changes is kept.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import chain, repeat

import numpy as np
import torch

from ..errors import ConvlabError
from .performance import Precision

START_LR = 1e-7  # fastai's defaults
END_LR = 10.0
STEPS = 100
MIN_STEPS = 10  # fewer points leave nothing to suggest from once the ends are trimmed
MAX_STEPS = 1000  # a range test is a few hundred steps, not a training run
SMOOTHING = 0.98  # fastai's Recorder: beta of the loss's moving average
DIVERGED = 4.0  # stop once the smoothed loss exceeds this many times its minimum
TRIM_END = 5  # fastai leaves out the first tenth of the steps and the last five before suggesting


@dataclass(frozen=True)
class Ramp:
    """The range of the test: `steps` rates from `start` to `end`, each a constant factor above the one before."""

    start: float = START_LR
    end: float = END_LR
    steps: int = STEPS

    def check(self) -> "Ramp":
        """Refuse a range the test cannot run, naming the flag."""
        if not MIN_STEPS <= self.steps <= MAX_STEPS:
            raise ConvlabError(f"invalid value for --steps: {self.steps}; give {MIN_STEPS} to {MAX_STEPS} steps "
                               f"(default {STEPS})")
        if not (math.isfinite(self.start) and self.start > 0):
            raise ConvlabError(f"invalid value for --start-lr: {self.start}; give a rate above 0 (default {START_LR})")
        if not (math.isfinite(self.end) and self.end > self.start):
            raise ConvlabError(f"invalid value for --end-lr: {self.end}; give a rate above --start-lr {self.start} "
                               f"(default {END_LR})")
        return self

    def rates(self) -> np.ndarray:
        """rate[i] = start x (end / start) ** (i / (steps - 1)): the first is `start`, the last `end`."""
        return self.start * (self.end / self.start) ** (np.arange(self.steps) / (self.steps - 1))


def smooth(losses, beta: float = SMOOTHING) -> np.ndarray:
    """The debiased exponential moving average (fastai's Recorder): for step i = 1, 2, ...,
    avg_i = beta avg_(i-1) + (1 - beta) loss_i from avg_0 = 0, reported as avg_i / (1 - beta^i) so the first
    values are not pulled toward the start at 0."""
    out, average = [], 0.0
    for i, loss in enumerate(losses, start=1):
        average = beta * average + (1 - beta) * float(loss)
        out.append(average / (1 - beta ** i))
    return np.array(out)


def steepest(lrs, losses) -> int:
    """Index of the steepest descent: the rate where the loss falls fastest against log(rate) (the left end of
    the segment with the most negative slope, as fastai's `steep`)."""
    lrs, losses = np.asarray(lrs, dtype=float), np.asarray(losses, dtype=float)
    slopes = np.diff(losses) / np.diff(np.log(lrs))
    return int(np.argmin(slopes))


def valley(losses) -> int:
    """Index of the middle of the longest valley, fastai's `valley` rule (its default suggestion).

    The valley is the longest run of ever lower losses: for each point, the length of the longest strictly
    decreasing subsequence that ends there (the classic O(n^2) recurrence); the valley ends at the point with
    the longest one (the first such point) and starts that many points earlier. fastai suggests the rate
    halfway down it (start + a third + a sixth of its length): past the noisy flat start, well before the
    minimum, where the loss still falls steadily.
    """
    losses = np.asarray(losses, dtype=float)
    longest = np.ones(len(losses), dtype=int)
    for i in range(1, len(losses)):
        lower = longest[:i][losses[:i] > losses[i]]
        if lower.size:
            longest[i] = lower.max() + 1
    end = int(np.argmax(longest))
    start = end - int(longest[end]) + 1
    third = (end - start) / 3
    return start + int(third) + int(third / 2)


@dataclass
class Finding:
    """What a range test measured and suggests. lrs/losses are per step taken (it may stop before the end)."""

    ramp: Ramp
    lrs: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)  # the raw loss of each step
    stopped_early: bool = False  # the smoothed loss passed 4x its minimum (or was not finite)

    @property
    def smoothed(self) -> np.ndarray:
        return smooth(self.losses)

    def suggestions(self) -> dict[str, float]:
        """{"valley": rate, "steepest": rate} from the smoothed curve, to 3 significant digits; the first tenth
        of the planned steps and the last five taken are left out (as fastai: the start is noise, the end is
        divergence)."""
        first, last = self.ramp.steps // 10, len(self.losses) - TRIM_END
        if last - first < 3:
            raise ConvlabError(f"the loss diverged after {len(self.losses)} of {self.ramp.steps} steps, too early "
                               f"to suggest a rate; lower --end-lr (now {self.ramp.end:g}) or raise --steps")
        lrs, losses = np.array(self.lrs[first:last]), self.smoothed[first:last]
        return {"valley": rounded(lrs[valley(losses)]), "steepest": rounded(lrs[steepest(lrs, losses)])}


def rounded(lr: float) -> float:
    """A rate to 3 significant digits: the number printed is the number used (and saved in config.yaml)."""
    return float(f"{lr:.3g}")


def run_ramp(model: torch.nn.Module, loader, optimizer: torch.optim.Optimizer, loss_fn, step, ramp: Ramp,
             precision: Precision | None = None, on_step=None) -> Finding:
    """Train `model` one batch per rate of `ramp` (the loader is passed over again when it runs out).

    Every optimizer group moves together at its ratio to the first group's starting rate (a fine-tune's
    backbone keeps its fraction of the head's rate). `step(model, batch, loss_fn) -> (loss, count, correct)` is
    the task's training step and `precision` the run's autocast and backward. `on_step(i, lr, loss)` is called
    after each step. Stops early once the smoothed loss exceeds 4x its minimum or is not finite.
    """
    ramp.check()
    if len(loader) == 0:
        raise ConvlabError("the training split has no batch to test rates on; give more data or a smaller "
                           "--batch-size")
    precision = precision or Precision("cpu")
    base = optimizer.param_groups[0].get("initial_lr", optimizer.param_groups[0]["lr"])
    ratios = [group.get("initial_lr", group["lr"]) / base for group in optimizer.param_groups]
    finding = Finding(ramp)
    average, best = 0.0, math.inf
    model.train()
    batches = chain.from_iterable(repeat(loader))  # a new pass (newly shuffled) whenever the loader runs out
    for i, (lr, batch) in enumerate(zip(ramp.rates(), batches), start=1):
        for group, ratio in zip(optimizer.param_groups, ratios):
            group["lr"] = float(lr) * ratio
        with precision.autocast():
            loss, _, _ = step(model, batch, loss_fn)
        precision.backward_step(loss, optimizer)
        finding.lrs.append(float(lr))
        finding.losses.append(float(loss.detach()))
        if on_step is not None:
            on_step(i, float(lr), finding.losses[-1])
        average = SMOOTHING * average + (1 - SMOOTHING) * finding.losses[-1]  # smooth()'s average, one step at a time
        current = average / (1 - SMOOTHING ** i)
        best = min(best, current)
        if not math.isfinite(current) or (best > 0 and current > DIVERGED * best):  # a ratio needs a loss above 0
            finding.stopped_early = True
            break
    return finding
