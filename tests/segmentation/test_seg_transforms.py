"""Mask-aware augmentation: the image and its mask move together (flip, scale and crop), the mask stays class
indices (IGNORE where padded), and the generator alone fixes the draws."""
import pytest
import torch

from convlab.errors import ConvlabError
from convlab.segmentation.targets import IGNORE
from convlab.segmentation.transforms import build_segmentation_augmentation


def _pair(channels=1, height=64, width=96, side=16):
    """A mask of side x side blocks of classes 0-3 and an image whose value is class / 10 (every channel)."""
    blocks = torch.arange(height // side * (width // side)).reshape(height // side, width // side) % 4
    mask = blocks.repeat_interleave(side, 0).repeat_interleave(side, 1).to(torch.uint8)  # 0 1 2 3 0 ...: a flip shows
    image = (mask.float() / 10).expand(channels, height, width).clone()
    return image, mask


def _inside(mask, radius=1):
    """Pixels whose (2 radius + 1)^2 neighbourhood holds one mask value."""
    values = mask.float()[None, None]
    pool = torch.nn.functional.max_pool2d
    highest = pool(values, 2 * radius + 1, 1, radius)
    lowest = -pool(-values, 2 * radius + 1, 1, radius)
    return (highest == lowest)[0, 0]


def test_none_is_no_augmentation_and_an_unknown_level_is_refused():
    assert build_segmentation_augmentation("none") is None
    with pytest.raises(ConvlabError, match="--augment heavy: segmentation knows none, light, standard"):
        build_segmentation_augmentation("heavy")


def test_light_flips_the_image_and_its_mask_together():
    augment, (image, mask) = build_segmentation_augmentation("light"), _pair(channels=3)
    generator, flipped = torch.Generator().manual_seed(0), 0
    for _ in range(12):
        out, out_mask = augment(image, mask, generator)
        turned = torch.equal(out_mask, mask.flip(-1))
        assert turned or torch.equal(out_mask, mask)
        assert torch.equal(out, image.flip(-1) if turned else image)
        flipped += turned
    assert 0 < flipped < 12


def test_standard_scales_and_crops_both_keeping_the_size_and_the_correspondence():
    augment, (image, mask) = build_segmentation_augmentation("standard"), _pair(channels=1)
    generator, padded = torch.Generator().manual_seed(1), 0
    for _ in range(10):
        out, out_mask = augment(image, mask, generator)
        assert out.shape == image.shape and out_mask.shape == mask.shape and out_mask.dtype == torch.uint8
        assert set(out_mask.unique().tolist()) <= {0, 1, 2, 3, IGNORE}  # nearest-neighbour: no blended index
        assert not torch.equal(out_mask, mask) or torch.equal(out, image)
        kept = out_mask != IGNORE
        inside = _inside(out_mask) & kept  # away from a block's edge, where resizing blends the image
        assert inside.sum() > 0.2 * kept.sum()
        assert ((out[0] - out_mask.float() / 10).abs()[inside] < 0.01).all()
        assert (out[0][~kept] == 0).all()  # padding: image 0, mask IGNORE
        padded += int((~kept).any())
    assert padded > 0  # some draws shrank the image


def test_the_generator_fixes_every_draw_and_the_global_rng_is_untouched():
    augment, (image, mask) = build_segmentation_augmentation("standard"), _pair(channels=3)
    state = torch.get_rng_state()
    runs = []
    for _ in range(2):
        generator = torch.Generator().manual_seed(7)
        runs.append([augment(image, mask, generator) for _ in range(4)])
    for (a, a_mask), (b, b_mask) in zip(*runs):
        assert torch.equal(a, b) and torch.equal(a_mask, b_mask)
    assert len({tuple(out_mask.flatten()[::97].tolist()) for _, out_mask in runs[0]}) > 1
    assert torch.equal(torch.get_rng_state(), state)


def test_colour_changes_touch_rgb_only():
    augment = build_segmentation_augmentation("standard")
    image, mask = _pair(channels=3)
    generator = torch.Generator().manual_seed(3)
    outs = [augment(image, mask, generator) for _ in range(6)]
    assert any(((out[0][m != IGNORE] - m[m != IGNORE].float() / 10).abs() > 0.02).float().mean() > 0.5
               for out, m in outs)  # brightness and contrast moved the RGB values
