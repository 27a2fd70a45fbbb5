"""Whole-batch augmentation on the training device: shifts and flips for small images; for photographs
random-resized crops, flips, torchvision's v2 policies (RandAugment, TrivialAugment, AutoAugment, AugMix) and
random erasing.

Everything draws from the loader's torch.Generator, so a seed fixes the batches and a resumed run replays them.
The crop, the flip and the erasing are drawn per image and applied to the whole batch at once; the v2 policies
draw from torch's global RNG, so they run with it seeded from the generator and put back afterwards.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from functools import cache
from typing import Callable

import torch
import torch.nn.functional as F

from ..errors import ConvlabError

Augmentation = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def random_shift(images: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Shift each image by its own random (dy, dx) in [-max_shift, max_shift], zero-filled.

    Same as a random crop of the image padded by max_shift, done for the whole batch with one gather.
    images: (N, C, H, W).
    """
    if max_shift <= 0:
        return images
    n, _, h, w = images.shape
    padded = F.pad(images, (max_shift,) * 4)  # (N, C, H + 2s, W + 2s)
    offsets = torch.randint(0, 2 * max_shift + 1, (2, n), generator=generator).to(images.device)
    rows = offsets[0][:, None] + torch.arange(h, device=images.device)  # (N, H)
    cols = offsets[1][:, None] + torch.arange(w, device=images.device)  # (N, W)
    batch = torch.arange(n, device=images.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # (N, H, W, C)
    return out.permute(0, 3, 1, 2)


def random_hflip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mirror a random half of the batch left-right. images: (N, C, H, W)."""
    flip = (torch.rand(len(images), generator=generator) < 0.5).to(images.device)
    return torch.where(flip[:, None, None, None], images.flip(-1), images)


@dataclass(frozen=True)
class ShiftFlip:
    """Random shifts of up to `shift` pixels, then random left-right flips when `flip`.

    A plain dataclass rather than a closure, so DataLoader workers can receive it on any platform.
    """

    shift: int
    flip: bool

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        images = random_shift(images, self.shift, generator)
        if self.flip:
            images = random_hflip(images, generator)
        return images


# --- photographs: random-resized crop, flip, then a v2 policy ---------------------------------------------

CROP_SCALE = (0.08, 1.0)  # torchvision's and timm's RandomResizedCrop defaults: the share of the area kept
CROP_RATIO = (3 / 4, 4 / 3)  # and the aspect ratios of the crop
# The smallest crop keeps 8% of the area: about 4x4 pixels of a 16x16 image, 2x2 of an 8x8 one, where it holds
# nothing recognizable to resize back up.
MIN_PHOTO_SIZE = 16
# A v2 policy called on a batch tensor applies ONE draw (op and magnitude) to every image in it; per-image calls
# cost 0.26-1.5 ms per 32x32 image on a CPU thread, as much as small-cnn's training step (0.5 ms) or more.
# Groups of this many images share a draw: each image's augmentation still follows the policy's distribution
# (only images of the same group within a batch are correlated) and the policies ran 4-5x faster than per
# image (docs/speed.md).
POLICY_GROUP = 8


def _randaugment(v2):
    return v2.RandAugment()  # torchvision's defaults: 2 ops of magnitude 9 (of 31)


def _trivialaugment(v2):
    return v2.TrivialAugmentWide()


def _autoaugment(v2):
    return v2.AutoAugment(v2.AutoAugmentPolicy.IMAGENET)  # torchvision's default policy


def _augmix(v2):
    return v2.AugMix()  # severity 3, 3 chains, as the paper and torchvision


POLICIES: dict[str, Callable | None] = {"photo": None, "randaugment": _randaugment,
                                        "trivialaugment": _trivialaugment, "autoaugment": _autoaugment,
                                        "augmix": _augmix}


@cache
def _policy(name: str):
    from torchvision.transforms import v2  # lazy: start-up time (torchvision's transforms)

    return POLICIES[name](v2)


@contextlib.contextmanager
def global_rng_from(generator: torch.Generator, device: torch.device):
    """Run torch's global RNG (the CPU's, and `device`'s when it is a GPU) seeded by one draw of `generator`,
    and put it back afterwards: for library code (v2 transforms) that draws from the global RNG, so its draws
    follow the loader's seed and nothing else sees them."""
    seed = int(torch.randint(2 ** 62, (1,), generator=generator))
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.default_generator.manual_seed(seed)
        if devices:
            index = torch.cuda.current_device() if device.index is None else device.index
            torch.cuda.default_generators[index].manual_seed(seed)
        yield


def _uniform(shape: tuple[int, ...], low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(shape, generator=generator, dtype=torch.float64)


def crop_boxes(n: int, height: int, width: int, generator: torch.Generator, scale=CROP_SCALE,
               ratio=CROP_RATIO) -> torch.Tensor:
    """(n, 4) int64 boxes (top, left, h, w): torchvision's RandomResizedCrop.get_params drawn for n images at once.

    As torchvision: up to 10 tries of an area share in `scale` and a log-uniform aspect in `ratio`; the first that
    fits is kept, placed uniformly; where none fits, the central crop of the aspect clamped into `ratio`.
    """
    tries = 10
    area = _uniform((n, tries), *scale, generator) * (height * width)
    aspect = torch.exp(_uniform((n, tries), math.log(ratio[0]), math.log(ratio[1]), generator))
    w = torch.round(torch.sqrt(area * aspect)).long()
    h = torch.round(torch.sqrt(area / aspect)).long()
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.long().argmax(1)  # the first try that fits (0 when none does: replaced below)
    h, w = h.gather(1, first[:, None])[:, 0], w.gather(1, first[:, None])[:, 0]
    position = torch.rand((n, 2), generator=generator, dtype=torch.float64)
    top = (position[:, 0] * (height - h + 1)).long()
    left = (position[:, 1] * (width - w + 1)).long()
    fallback_h, fallback_w = _central_crop(height, width, ratio)
    missed = ~fits.any(1)
    h, w = torch.where(missed, fallback_h, h), torch.where(missed, fallback_w, w)
    top = torch.where(missed, (height - fallback_h) // 2, top)
    left = torch.where(missed, (width - fallback_w) // 2, left)
    return torch.stack([top, left, h, w], 1)


def _central_crop(height: int, width: int, ratio) -> tuple[int, int]:
    """torchvision's fallback: the whole image, cut to the nearest aspect ratio inside `ratio`."""
    if width / height < min(ratio):
        return int(round(width / min(ratio))), width
    if width / height > max(ratio):
        return height, int(round(height * max(ratio)))
    return height, width


def resize_boxes(images: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Each image's box (top, left, h, w) resized bilinearly to the image's own size, the whole batch in one
    grid_sample: the same sampling as cropping then F.interpolate(align_corners=False) (source pixel
    (y + 0.5) * h / H - 0.5, clamped inside the box). images: (N, C, H, W) uint8 -> the same."""
    n, _, height, width = images.shape
    boxes = boxes.to(device=images.device, dtype=torch.float32)
    top, left, h, w = boxes.unbind(1)

    def source(start, length, size):  # (N, size) source pixel coordinates -> grid_sample's [-1, 1]
        steps = torch.arange(size, device=images.device, dtype=torch.float32) + 0.5
        pixel = start[:, None] + steps[None] * (length / size)[:, None] - 0.5
        pixel = torch.minimum(torch.maximum(pixel, start[:, None]), (start + length - 1)[:, None])
        return (2 * pixel + 1) / size - 1

    ys, xs = source(top, h, height), source(left, w, width)
    grid = torch.stack([xs[:, None, :].expand(n, height, width), ys[:, :, None].expand(n, height, width)], -1)
    out = F.grid_sample(images.float(), grid, mode="bilinear", align_corners=False)  # (N, C, H, W)
    return out.round_().clamp_(0, 255).to(torch.uint8)


def random_resized_crop(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A random-resized crop per image (torchvision's scale and ratio defaults), back to the batch's size."""
    n, _, height, width = images.shape
    return resize_boxes(images, crop_boxes(n, height, width, generator))


@dataclass(frozen=True)
class PhotoAugment:
    """photo: a random-resized crop and (when `flip`) a left-right flip per image; `policy` (randaugment,
    trivialaugment, autoaugment, augmix), when not photo, then runs on groups of POLICY_GROUP images.
    images: (N, C, H, W) uint8 on the training device."""

    policy: str
    flip: bool

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        images = random_resized_crop(images, generator)
        if self.flip:
            images = random_hflip(images, generator)
        if POLICIES[self.policy] is None:
            return images
        transform = _policy(self.policy)
        with global_rng_from(generator, images.device):
            return torch.cat([transform(group) for group in images.split(POLICY_GROUP)])


# --- random erasing, on normalized images --------------------------------------------------------------------

ERASE_SCALE = (0.02, 0.33)  # torchvision's RandomErasing defaults: the share of the area erased
ERASE_RATIO = (0.3, 3.3)  # and the aspect ratio of the rectangle


def erase_boxes(n: int, height: int, width: int, generator: torch.Generator, scale=ERASE_SCALE,
                ratio=ERASE_RATIO) -> torch.Tensor:
    """(n, 4) int64 rectangles (top, left, h, w): torchvision's RandomErasing.get_params for n images at once
    (10 tries; h = 0 where none fits, so nothing is erased, as torchvision)."""
    tries = 10
    area = _uniform((n, tries), *scale, generator) * (height * width)
    aspect = torch.exp(_uniform((n, tries), math.log(ratio[0]), math.log(ratio[1]), generator))
    h = torch.round(torch.sqrt(area * aspect)).long()
    w = torch.round(torch.sqrt(area / aspect)).long()
    fits = (h < height) & (w < width)
    first = fits.long().argmax(1)
    h, w = h.gather(1, first[:, None])[:, 0], w.gather(1, first[:, None])[:, 0]
    position = torch.rand((n, 2), generator=generator, dtype=torch.float64)
    top = (position[:, 0] * (height - h + 1)).long()
    left = (position[:, 1] * (width - w + 1)).long()
    none = ~fits.any(1)
    return torch.stack([top, left, torch.where(none, 0, h), torch.where(none, 0, w)], 1)


@dataclass(frozen=True)
class RandomErasing:
    """Erase one random rectangle (to 0, the channel mean once normalized) in a share `p` of the images, as
    torchvision's v2.RandomErasing(p) does image by image, here for the whole batch with one mask.
    images: (N, C, H, W) float, normalized."""

    p: float

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n, _, height, width = images.shape
        chosen = torch.rand(n, generator=generator) < self.p
        boxes = erase_boxes(n, height, width, generator)
        boxes[~chosen, 2:] = 0
        top, left, h, w = (v.to(images.device)[:, None] for v in boxes.unbind(1))
        rows = torch.arange(height, device=images.device)[None]
        cols = torch.arange(width, device=images.device)[None]
        inside_rows = (rows >= top) & (rows < top + h)  # (N, H)
        inside_cols = (cols >= left) & (cols < left + w)  # (N, W)
        mask = inside_rows[:, None, :, None] & inside_cols[:, None, None, :]  # (N, 1, H, W)
        return images.masked_fill(mask, 0.0)


def build_erasing(p: float) -> RandomErasing | None:
    """--erasing P -> the erasing step, or None for 0."""
    return RandomErasing(p) if p > 0 else None


def build_augmentation(level: str, image_size: int, hflip: bool) -> Augmentation | None:
    """none: nothing; light: shifts of 1/8 of the size; standard: shifts plus flips when labels allow; photo and
    the v2 policies: PhotoAugment (flips when labels allow), on images of MIN_PHOTO_SIZE or more."""
    if level == "none":
        return None
    if level in POLICIES:
        if image_size < MIN_PHOTO_SIZE:
            raise ConvlabError(f"--augment {level} needs images of at least {MIN_PHOTO_SIZE}x{MIN_PHOTO_SIZE} (its "
                               f"random-resized crop keeps as little as 8% of the area), got {image_size}x"
                               f"{image_size}; pass --image-size {MIN_PHOTO_SIZE} or more, or --augment standard")
        return PhotoAugment(level, hflip)
    return ShiftFlip(max(1, image_size // 8), level == "standard" and hflip)
