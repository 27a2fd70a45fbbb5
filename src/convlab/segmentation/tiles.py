"""Sliding-window prediction: an image larger than the model's input segmented tile by tile, the tiles blended.

Windows are tile x tile, `stride = round(tile * (1 - overlap))` apart; the last window of a row or column is
shifted inward to end at the image's edge, so every window is full size and nothing is padded, except an
image smaller than the tile: it is padded with zeros on the right and bottom to the tile and the result
cropped back (for a model whose convolutions pad with zeros and that has one layer, this is the whole-image
pass exactly; for a deeper one it is the definition of the result).

Overlapping logits are averaged with a Gaussian weight window (sigma = tile / 8, as MONAI's
`sliding_window_inference(mode="gaussian")` and nnU-Net use; written here in a few lines, MONAI is not a
dependency): a pixel near a window's edge was seen with little context and zero padding, so the window whose
centre it is near counts most, and seams between tiles fade out instead of showing as lines. The weights never
reach zero, so a pixel that only a window's edge covers (an image corner) still gets that window's logits.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..errors import ConvlabError

MIN_TILE = 16
SIGMA_SCALE = 1 / 8  # of the tile: MONAI's sigma_scale default and nnU-Net's


def check_tiling(tile: int, overlap: float) -> None:
    """--tile and --overlap as sliding windows need them, else a ConvlabError naming the option."""
    if tile < MIN_TILE:
        raise ConvlabError(f"--tile {tile}: a tile is at least {MIN_TILE} pixels; give the model's input size "
                           "(e.g. the training --size)")
    if not 0 <= overlap < 1:
        raise ConvlabError(f"--overlap {overlap}: the overlap is a fraction of the tile in [0, 1), e.g. 0.25")


def window_starts(length: int, tile: int, stride: int) -> list[int]:
    """Offsets of the windows along one axis: every `stride` pixels, the last one ending at the edge."""
    if length <= tile:
        return [0]
    return [*range(0, length - tile, stride), length - tile]


def windows(height: int, width: int, tile: int, overlap: float) -> list[tuple[int, int]]:
    """(top, left) of every window over a height x width image, row by row: ceil((L - tile) / stride) + 1
    windows along an axis of length L > tile, one along a shorter axis."""
    check_tiling(tile, overlap)
    stride = max(1, round(tile * (1 - overlap)))
    return [(top, left) for top in window_starts(height, tile, stride) for left in window_starts(width, tile, stride)]


def gaussian_window(tile: int, device=None) -> torch.Tensor:
    """(tile, tile) weights: a Gaussian centred on the tile, sigma = tile / 8, peak 1; at the corners (4 sigma
    out on both axes) exp(-16), about 1e-7, for every tile size: small, never zero in float32."""
    position = torch.arange(tile, dtype=torch.float32, device=device) - (tile - 1) / 2
    line = torch.exp(-0.5 * (position / (tile * SIGMA_SCALE)) ** 2)
    return line[:, None] * line[None, :]


@torch.no_grad()
def predict_tiled(forward: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor, tile: int, overlap: float,
                  num_classes: int, batch_size: int = 8) -> torch.Tensor:
    """Class probabilities (K, H, W) of `image` (C, H, W) float: softmax of the windows' blended logits.

    `forward` maps (B, C, tile, tile) to logits (B, K, tile, tile); windows go through it `batch_size` at a time.
    """
    _, height, width = image.shape
    padded = F.pad(image, (0, max(0, tile - width), 0, max(0, tile - height)))  # only when smaller than the tile
    spots = windows(*padded.shape[1:], tile, overlap)
    weights = gaussian_window(tile, image.device)
    total = torch.zeros(num_classes, *padded.shape[1:], device=image.device)
    weight_sum = torch.zeros(padded.shape[1:], device=image.device)
    for first in range(0, len(spots), batch_size):
        chunk = spots[first:first + batch_size]
        logits = forward(torch.stack([padded[:, top:top + tile, left:left + tile] for top, left in chunk]))
        if tuple(logits.shape) != (len(chunk), num_classes, tile, tile):
            raise ValueError(f"the model gave logits of shape {tuple(logits.shape)} for {len(chunk)} windows of "
                             f"{tile}x{tile}: expected {(len(chunk), num_classes, tile, tile)}")
        for (top, left), window in zip(chunk, logits.float()):
            total[:, top:top + tile, left:left + tile] += window * weights
            weight_sum[top:top + tile, left:left + tile] += weights
    return (total / weight_sum)[:, :height, :width].softmax(0)
