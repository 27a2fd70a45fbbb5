"""Bringing image arrays to the size and channels a model takes: resizing and gray/RGB conversion."""
from __future__ import annotations

import numpy as np

from ..errors import ConvlabError
from .arrays import ImageArrays


def resize_arrays(data: ImageArrays, size: int) -> ImageArrays:
    """Bilinear resize of a whole uint8 set to size x size (used by --image-size)."""
    import torch  # lazy: start-up time; the data layer works without torch until it resizes
    import torch.nn.functional as F

    out = []
    for start in range(0, len(data), 1024):
        chunk = torch.from_numpy(data.images[start:start + 1024]).float()
        chunk = F.interpolate(chunk, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        out.append(chunk.round().clamp(0, 255).to(torch.uint8).numpy())
    images = np.concatenate(out) if out else np.zeros((0, data.images.shape[1], size, size), np.uint8)
    return ImageArrays(images, data.labels)


def conform_arrays(arrays: ImageArrays, channels: int, size: list[int] | tuple[int, int], who: str) -> ImageArrays:
    """Convert images to `channels` (luma for 1, channel repeat for more) and resize to `size` [h, w].

    Returns `arrays` itself when nothing changes, and a memory-mapped gray split repeated as a read-only view,
    so a streamed split stays on disk.
    """
    images = arrays.images
    if images.shape[1] == channels and list(images.shape[2:]) == list(size):
        return arrays
    if images.shape[1] != channels:
        if channels == 1:  # ITU-R 601 luma, as PIL's convert("L")
            weights = np.array([0.299, 0.587, 0.114])[:, None, None]
            images = np.round((images[:, :3].astype(np.float64) * weights).sum(1, keepdims=True)).astype(np.uint8)
        elif isinstance(images, np.memmap):  # a streamed split stays on disk: the channel axis is a view
            images = np.broadcast_to(images[:, :1], (len(images), channels, *images.shape[2:]), subok=True)
        else:
            images = np.repeat(images[:, :1], channels, axis=1)
    conformed = ImageArrays(images, arrays.labels)
    if list(images.shape[2:]) != list(size):
        h, w = size
        if h != w:
            raise ConvlabError(f"{who} expects {h}x{w} images; cannot resize other data to it")
        conformed = resize_arrays(conformed, h)
    return conformed
