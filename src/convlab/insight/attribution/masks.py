"""Feature masks for LIME and KernelSHAP: which pixels switch on and off together."""
from __future__ import annotations

import numpy as np
import torch

from ...errors import ConvlabError

FEATURES = 64  # about this many features per image, whatever its size


def grid_mask(height: int, width: int) -> torch.Tensor:
    """(H, W) ids of square cells, about sqrt(FEATURES) cells along the shorter side."""
    cell = max(1, round(min(height, width) / np.sqrt(FEATURES)))
    rows = torch.arange(height) // cell
    cols = torch.arange(width) // cell
    return rows[:, None] * (int(cols.max()) + 1) + cols[None, :]


def superpixel_mask(image: torch.Tensor) -> torch.Tensor:
    """(C, H, W) -> (H, W) ids of about FEATURES superpixels: k-means on position and colour, as SLIC does."""
    from sklearn.cluster import KMeans

    channels, height, width = image.shape
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    colour = image.reshape(channels, -1).T.detach().cpu().numpy()
    colour = (colour - colour.mean(0)) / (colour.std(0) + 1e-8)
    step = np.sqrt(height * width / FEATURES)  # the grid spacing of the seeds
    position = np.stack([ys.flatten().numpy(), xs.flatten().numpy()], 1) / step
    points = np.concatenate([position, colour], 1)
    count = min(FEATURES, height * width)
    labels = KMeans(count, n_init=1, random_state=0).fit_predict(points)
    return torch.from_numpy(labels.reshape(height, width)).long()


MASKS = {"grid": lambda image: grid_mask(*image.shape[1:]), "superpixel": superpixel_mask}


def feature_mask(inputs: torch.Tensor, kind: str) -> torch.Tensor:
    """(N, C, H, W) -> (N, 1, H, W) feature ids of each image, shared by its channels."""
    if kind not in MASKS:
        raise ConvlabError(f"--mask {kind!r}: choose one of {', '.join(MASKS)}")
    return torch.stack([MASKS[kind](image) for image in inputs])[:, None].to(inputs.device)
