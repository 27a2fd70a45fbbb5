"""The learning-rate finder's loss-vs-rate curve: as a PNG (log rate axis, suggestions marked) and as text."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..training.lr_find import DIVERGED, Finding
from .plots import new_figure

MARKS = {"valley": ("V", "tab:red"), "steepest": ("S", "tab:orange")}  # suggestion -> (text mark, colour)


def plot_lr_find(finding: Finding, suggestions: dict[str, float], path: Path) -> None:
    """The raw and smoothed loss per step against the rate (log axis), each suggestion a marked point."""
    lrs, smoothed = np.array(finding.lrs), finding.smoothed
    fig = new_figure((6.4, 4.2))
    ax = fig.subplots()
    ax.plot(lrs, finding.losses, color="0.75", linewidth=0.8, label="loss (each step)")
    ax.plot(lrs, smoothed, color="tab:blue", label="loss (smoothed)")
    for name, lr in suggestions.items():
        mark, colour = MARKS[name]
        ax.plot([lr], [np.interp(math.log(lr), np.log(lrs), smoothed)], "o", color=colour, markersize=7,
                label=f"{name} {lr:.2e}")
    ax.set_xscale("log")
    ax.set_ylim(*y_range(smoothed))
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    ax.set_title("learning-rate finder" + (" (stopped: the loss diverged)" if finding.stopped_early else ""))
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def y_range(smoothed: np.ndarray) -> tuple[float, float]:
    """From a little under the lowest smoothed loss to a little over the first: the divergence at the end can
    be orders of magnitude higher and would flatten the part worth reading."""
    finite = smoothed[np.isfinite(smoothed)]
    low, high = float(finite.min()), float(max(finite[0], finite.min()))
    pad = 0.05 * (high - low) or 0.05 * abs(low) or 0.05
    return low - pad, high + 3 * pad


def text_plot(finding: Finding, suggestions: dict[str, float], width: int = 60, height: int = 12) -> list[str]:
    """The smoothed curve as `height` lines of text for the terminal: '*' the loss, V and S the suggestions,
    the loss on the left, the rate (log scale) underneath."""
    logs, smoothed = np.log10(finding.lrs), finding.smoothed
    low, high = y_range(smoothed)
    left, right = math.log10(finding.ramp.start), math.log10(finding.ramp.end)  # the whole ramp planned
    grid = [[" "] * width for _ in range(height)]

    def cell(log_lr: float, loss: float) -> tuple[int, int] | None:
        if not math.isfinite(loss) or loss > high:
            return None
        col = round((log_lr - left) / (right - left) * (width - 1))
        row = round((high - max(loss, low)) / (high - low) * (height - 1))
        return row, col

    for log_lr, loss in zip(logs, smoothed):
        place = cell(log_lr, loss)
        if place:
            grid[place[0]][place[1]] = "*"
    for name, lr in suggestions.items():
        place = cell(math.log10(lr), float(np.interp(math.log10(lr), logs, smoothed)))
        if place:
            grid[place[0]][place[1]] = MARKS[name][0]
    lines = []
    for row, cells in enumerate(grid):
        label = f"{high - row * (high - low) / (height - 1):8.3f}" if row in (0, height - 1) else " " * 8
        lines.append(f"{label} |{''.join(cells)}")
    lines.append(" " * 9 + "+" + "-" * width)
    first, last = f"{10 ** left:.0e}", f"{10 ** right:.0e}"
    lines.append(" " * 10 + first + " " * max(1, width - len(first) - len(last)) + last + "  (learning rate, log)")
    return lines


def show_finding(console, finding: Finding, suggestions: dict[str, float]) -> None:
    """Print how the ramp went, the curve as text and the suggested rates (valley first: the one to use)."""
    smoothed = finding.smoothed
    lowest = int(np.nanargmin(smoothed))
    where = f"lowest smoothed loss {smoothed[lowest]:.4g} at lr {finding.lrs[lowest]:.2e}"
    if finding.stopped_early:
        console.print(f"lr-find: stopped after {len(finding.lrs)} of {finding.ramp.steps} steps, at lr "
                      f"{finding.lrs[-1]:.2e}: the smoothed loss passed {DIVERGED:g}x its minimum ({where})",
                      markup=False)
    else:
        console.print(f"lr-find: {len(finding.lrs)} steps, {where}", markup=False)
    for line in text_plot(finding, suggestions):
        console.print(line, markup=False)
    shown = ", ".join(f"{name} {lr:.3g} ({MARKS[name][0]})" for name, lr in suggestions.items())
    console.print(f"suggested learning rates: {shown}", markup=False)
