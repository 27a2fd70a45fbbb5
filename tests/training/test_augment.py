"""Batch augmentation: shifts equal crops of the padded image; flips mirror; labels untouched."""
import torch
import torch.nn.functional as F

from convlab.data.augment import build_augmentation, random_hflip, random_shift


def test_random_shift_is_a_crop_of_the_padded_image():
    images = torch.arange(2 * 3 * 5 * 6, dtype=torch.uint8).reshape(2, 3, 5, 6)
    gen = torch.Generator().manual_seed(3)
    out = random_shift(images, 2, gen)
    offsets = torch.randint(0, 5, (2, 2), generator=torch.Generator().manual_seed(3))
    padded = F.pad(images, (2, 2, 2, 2))
    for n in range(2):
        dy, dx = offsets[0][n], offsets[1][n]
        assert torch.equal(out[n], padded[n, :, dy:dy + 5, dx:dx + 6])


def test_hflip_mirrors_some_and_keeps_others():
    images = torch.randint(0, 255, (64, 1, 4, 4), dtype=torch.uint8)
    out = random_hflip(images, torch.Generator().manual_seed(0))
    flipped = [torch.equal(out[i], images[i].flip(-1)) for i in range(64)]
    kept = [torch.equal(out[i], images[i]) for i in range(64)]
    assert all(f or k for f, k in zip(flipped, kept))
    assert 10 < sum(flipped) < 54


def test_standard_never_flips_digits():
    augment = build_augmentation("standard", 8, hflip=False)
    image = torch.zeros(1, 1, 8, 8, dtype=torch.uint8)
    image[0, 0, 3:5, 0] = 255  # a mark on the left edge: a flip would move it to the far right
    for seed in range(20):
        out = augment(image, torch.Generator().manual_seed(seed))
        assert out[0, 0, :, 6:].sum() == 0
