"""Photo augmentation: random-resized crops and erasing drawn as torchvision draws them, resized and erased as
torchvision does; the v2 policies vary within a batch; everything follows the loader's seed alone."""
import math

import numpy as np
import pytest
import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from convlab.data.arrays import ImageArrays
from convlab.data.augment import (CROP_RATIO, CROP_SCALE, ERASE_RATIO, ERASE_SCALE, MIN_PHOTO_SIZE, POLICIES,
                                  PhotoAugment, RandomErasing, build_augmentation, crop_boxes, erase_boxes,
                                  random_hflip, resize_boxes)
from convlab.data.batches import BatchLoader, Normalization
from convlab.errors import ConvlabError
from cli_output import assert_one_line_error, run_cli


def _photos(n=16, size=32, channels=3, seed=0):
    return torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(seed))


def test_crop_boxes_fit_and_follow_torchvisions_scale_and_ratio():
    boxes = crop_boxes(4000, 32, 24, torch.Generator().manual_seed(0))
    top, left, h, w = boxes.T
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 32).all() and (left + w <= 24).all()
    area, aspect = (h * w).double() / (32 * 24), w.double() / h
    # rounding to whole pixels moves a box's share and aspect a little past the drawn range
    assert area.min() > CROP_SCALE[0] * 0.8 and area.max() <= 1.0
    assert aspect.min() > CROP_RATIO[0] * 0.8 and aspect.max() < CROP_RATIO[1] * 1.25
    # torchvision's draws: mean area share of accepted boxes, from its own get_params on the same image size
    torch.manual_seed(0)
    theirs = [v2.RandomResizedCrop.get_params(torch.zeros(1, 32, 24), list(CROP_SCALE), list(CROP_RATIO))
              for _ in range(4000)]
    their_area = np.mean([h * w for _, _, h, w in theirs]) / (32 * 24)
    assert abs(float(area.mean()) - their_area) < 0.02
    assert len({tuple(b) for b in boxes.tolist()}) > 1000  # per image, not one box for the batch


def test_a_box_that_never_fits_falls_back_to_torchvisions_central_crop():
    # a 4:1 image: no crop with aspect in [3/4, 4/3] and area share >= 0.9 fits; torchvision takes the centre
    boxes = crop_boxes(50, 8, 32, torch.Generator().manual_seed(1), scale=(0.9, 1.0))
    assert (boxes == torch.tensor([0, 10, 8, 11])).all()  # w = round(8 * 4/3) = 11, left = (32 - 11) // 2


@pytest.mark.parametrize("box", [(0, 0, 32, 32), (3, 5, 10, 14), (20, 1, 12, 7), (0, 30, 2, 2)])
def test_resized_box_equals_torchvisions_resized_crop(box):
    images = _photos(2)
    out = resize_boxes(images, torch.tensor([box, box]))
    theirs = TF.resized_crop(images.float(), *box, [32, 32], antialias=False).round().clamp(0, 255)
    assert (out.int() - theirs.int()).abs().max() <= 1  # float rounding at exact halves
    assert (out.int() == theirs.int()).float().mean() > 0.99
    if box == (0, 0, 32, 32):
        assert torch.equal(out, images)


def test_photo_is_the_crop_then_a_flip_drawn_per_image():
    images = _photos(32)
    out = PhotoAugment("photo", flip=False)(images, torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    cropped = resize_boxes(images, crop_boxes(32, 32, 32, g))
    assert torch.equal(out, cropped)
    flipped = PhotoAugment("photo", flip=True)(images, torch.Generator().manual_seed(5))
    assert torch.equal(flipped, random_hflip(cropped, g))
    mirrored = sum(torch.equal(flipped[i], cropped[i].flip(-1)) for i in range(32))
    assert 5 < mirrored < 27


@pytest.mark.parametrize("policy", [p for p in POLICIES if p != "photo"])
def test_policies_vary_within_a_batch_and_follow_the_seed_only(policy):
    same = _photos(1).expand(64, -1, -1, -1).contiguous()
    augment = build_augmentation(policy, 32, hflip=True)
    torch.manual_seed(123)  # the global RNG must not matter
    out = augment(same, torch.Generator().manual_seed(9))
    torch.manual_seed(456)
    again = augment(same, torch.Generator().manual_seed(9))
    assert torch.equal(out, again)
    assert out.dtype == torch.uint8 and out.shape == same.shape
    assert len({out[i].numpy().tobytes() for i in range(64)}) == 64
    other = augment(same, torch.Generator().manual_seed(10))
    assert not torch.equal(out, other)


def test_policies_leave_the_global_rng_where_it_was():
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    build_augmentation("randaugment", 32, hflip=True)(_photos(), torch.Generator().manual_seed(0))
    assert torch.equal(torch.rand(3), expected)


def test_the_policy_runs_after_the_crop_and_flip_in_groups(monkeypatch):
    """The policy sees the cropped uint8 images, in groups of POLICY_GROUP (one v2 draw per group)."""
    import convlab.data.augment as augment

    seen = []
    monkeypatch.setitem(augment.POLICIES, "randaugment", lambda v2: lambda group: seen.append(group) or group)
    augment._policy.cache_clear()
    try:
        images = _photos(20)
        out = augment.PhotoAugment("randaugment", flip=False)(images, torch.Generator().manual_seed(2))
    finally:
        augment._policy.cache_clear()
    assert [len(group) for group in seen] == [8, 8, 4]
    assert all(group.dtype == torch.uint8 for group in seen)
    assert torch.equal(out, PhotoAugment("photo", flip=False)(images, torch.Generator().manual_seed(2)))


def test_erase_boxes_follow_torchvisions_ranges():
    top, left, h, w = erase_boxes(4000, 32, 32, torch.Generator().manual_seed(0)).T
    assert (top + h <= 32).all() and (left + w <= 32).all() and (h < 32).all() and (w < 32).all()
    area, aspect = (h * w).double() / 1024, h.double() / w
    assert area.min() >= ERASE_SCALE[0] * 0.5 and area.max() < ERASE_SCALE[1] * 1.3
    assert aspect.min() > ERASE_RATIO[0] * 0.7 and aspect.max() < ERASE_RATIO[1] * 1.4


def test_erasing_equals_torchvisions_erase_on_the_drawn_rectangles():
    images = torch.randn(200, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    out = RandomErasing(0.5)(images, torch.Generator().manual_seed(4))
    g = torch.Generator().manual_seed(4)
    chosen = torch.rand(200, generator=g) < 0.5
    boxes = erase_boxes(200, 16, 16, g)
    for i in range(200):
        top, left, h, w = boxes[i].tolist()
        expected = TF.erase(images[i], top, left, h, w, torch.tensor(0.0)) if chosen[i] else images[i]
        assert torch.equal(out[i], expected)
    erased = sum(not torch.equal(out[i], images[i]) for i in range(200))
    assert 70 < erased < 130  # p = 0.5 of 200 images
    assert int(chosen.sum()) == erased


def test_loader_erases_after_normalizing():
    """Erased pixels are 0 in the normalized batch (the channel mean), as torchvision erases a normalized image."""
    data = ImageArrays(np.full((64, 1, 16, 16), 200, np.uint8), np.zeros(64, np.int64))
    norm = Normalization([0.2], [0.1])
    loader = BatchLoader(data, 64, norm, torch.device("cpu"), erase=RandomErasing(1.0),
                         generator=torch.Generator().manual_seed(0))
    images, _ = next(iter(loader))
    plain = (200 / 255 - 0.2) / 0.1
    values = images.unique()
    assert len(values) == 2 and values[0] == 0 and math.isclose(float(values[1]), plain, rel_tol=1e-5)
    assert all((images[i] == 0).any() for i in range(64))


def test_too_small_images_are_refused_with_the_minimum():
    with pytest.raises(ConvlabError, match=rf"--augment randaugment needs images of at least {MIN_PHOTO_SIZE}"):
        build_augmentation("randaugment", 8, hflip=False)
    assert build_augmentation("photo", MIN_PHOTO_SIZE, hflip=False) is not None


def test_cli_refuses_randaugment_on_8x8_digits(capsys, tmp_path):
    code, _, err = run_cli(capsys, "train", "--augment", "randaugment", "--epochs", "1", "--threads", "1",
                           "--quiet", "--out", str(tmp_path / "run"))
    assert_one_line_error(code, err, "--augment randaugment", "at least 16x16", "got 8x8", "--image-size 16")


def test_detection_refuses_the_classifier_recipes_by_name(capsys, tmp_path):
    code, _, err = run_cli(capsys, "train", "--data", "shapes", "--mixup", "0.2", "--quiet", "--out",
                           str(tmp_path / "run"))
    assert_one_line_error(code, err, "--mixup is not available for detect runs", "boxes")
    code, _, err = run_cli(capsys, "train", "--data", "shape-masks", "--augment", "trivialaugment", "--quiet",
                           "--out", str(tmp_path / "run2"))
    assert_one_line_error(code, err, "--augment trivialaugment is not available for segment runs",
                          "--augment light or standard")
