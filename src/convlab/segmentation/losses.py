"""Segmentation losses by name (--loss): cross-entropy, soft Dice and their sum, with the auxiliary head's loss
added at a weight as torchvision's segmentation reference does (out + 0.5 x aux).

A loss is fn(logits (N, K, H, W), mask (N, H, W) class indices, IGNORE where no class counts) -> scalar.
"""
from __future__ import annotations

import difflib
from typing import Callable

import torch
import torch.nn.functional as F

from ..errors import ConvlabError
from .targets import IGNORE

PixelLoss = Callable[..., torch.Tensor]  # (logits, mask, ignore_index) -> scalar
LOSSES: dict[str, PixelLoss] = {}


def register_loss(name: str):
    """Decorator: register a pixel loss under `name` (a --loss value)."""

    def wrap(fn: PixelLoss) -> PixelLoss:
        LOSSES[name] = fn
        return fn

    return wrap


def _nothing_counts(logits: torch.Tensor) -> torch.Tensor:
    """A zero that keeps the graph: a batch whose pixels are all ignored teaches nothing (instead of NaN)."""
    return logits.sum() * 0.0


@register_loss("ce")
def cross_entropy(logits: torch.Tensor, mask: torch.Tensor, ignore_index: int = IGNORE) -> torch.Tensor:
    """The mean cross-entropy over the pixels that are not ignored."""
    if not (mask != ignore_index).any():
        return _nothing_counts(logits)
    return F.cross_entropy(logits, mask, ignore_index=ignore_index)


@register_loss("dice")
def soft_dice(logits: torch.Tensor, mask: torch.Tensor, ignore_index: int = IGNORE) -> torch.Tensor:
    """1 - the mean over the classes present in the batch's masks of the soft Dice 2|P.T| / (|P| + |T|), with P
    the softmax probabilities and T the one-hot mask, summed over the whole batch's pixels (ignored ones left out).

    Hand-written: torchvision has no Dice loss, torchmetrics' Dice is a metric on hard labels (no gradient), and
    MONAI's DiceLoss is not a dependency. Choices (MONAI's include_background=True, batch=True): the background is
    a class like the others, so for two classes the loss is 1 - (foreground Dice + background Dice) / 2; a class
    absent from every mask of the batch is left out of the mean (its Dice would be 0 whatever the model does),
    so no smoothing term is needed: a present class has |T| >= 1."""
    valid = (mask != ignore_index).unsqueeze(1)  # (N, 1, H, W)
    if not valid.any():
        return _nothing_counts(logits)
    probs = logits.softmax(dim=1) * valid  # (N, K, H, W)
    target = F.one_hot(torch.where(valid[:, 0], mask, 0), logits.shape[1]).permute(0, 3, 1, 2) * valid
    target = target.to(probs.dtype)  # (N, K, H, W)
    overlap, predicted, true = ((probs * target).sum((0, 2, 3)), probs.sum((0, 2, 3)), target.sum((0, 2, 3)))
    present = true > 0
    return 1.0 - (2.0 * overlap[present] / (predicted[present] + true[present])).mean()


@register_loss("dice+ce")
def dice_and_cross_entropy(logits: torch.Tensor, mask: torch.Tensor, ignore_index: int = IGNORE) -> torch.Tensor:
    """Their sum: cross-entropy's steady per-pixel gradient, Dice's indifference to how large the background is
    (nnU-Net's default)."""
    return soft_dice(logits, mask, ignore_index) + cross_entropy(logits, mask, ignore_index)


def build_segmentation_loss(name: str, aux_weight: float = 0.5,
                            ignore_index: int = IGNORE) -> Callable[[object, torch.Tensor], torch.Tensor]:
    """--loss NAME -> fn(output, mask) -> scalar. output: a Segmenter's train-mode {"out", "aux"} (the aux head's
    loss added at `aux_weight`, when there is one) or a logits tensor; mask: (N, H, W) class indices."""
    if name not in LOSSES:
        close = difflib.get_close_matches(name, list(LOSSES), n=2)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ConvlabError(f"--loss {name}: no such segmentation loss.{hint} Choose from {', '.join(LOSSES)}")
    pixel_loss = LOSSES[name]

    def loss(output, mask: torch.Tensor) -> torch.Tensor:
        mask = mask.long()
        if isinstance(output, torch.Tensor):
            return pixel_loss(output, mask, ignore_index)
        total = pixel_loss(output["out"], mask, ignore_index)
        if output.get("aux") is not None:
            total = total + aux_weight * pixel_loss(output["aux"], mask, ignore_index)
        return total

    return loss
