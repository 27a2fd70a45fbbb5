"""The detection loader (decode once, resize, order from the generator, shards by rank) and box-aware
augmentation (boxes move with the image; the same draws from the same generator)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from convlab.detection.batches import DetectionLoader, resize_longer
from convlab.detection.targets import Annotated
from convlab.detection.transforms import build_detection_augmentation
from convlab.errors import ConvlabError


@pytest.fixture(autouse=True)
def _one_thread():
    """Small tensors: one thread is several times faster than two on a busy CPU (conftest restores the count)."""
    torch.set_num_threads(1)


def square_items(folder, count: int, width: int = 48, height: int = 32) -> list[Annotated]:
    """Black images, each with one white square whose left edge is the image's index: boxes name their image."""
    items = []
    for i in range(count):
        pixels = np.zeros((height, width, 3), dtype=np.uint8)
        pixels[4:14, i:i + 10] = 255
        path = folder / f"{i}.png"
        Image.fromarray(pixels).save(path)
        items.append(Annotated(path, width, height, [[i, 4, i + 10, 14]], [i % 3], image_id=i + 1))
    return items


def lefts(batches) -> list[int]:
    return [int(t["boxes"][0, 0]) for _, targets in batches for t in targets]


def summary(loader) -> list:
    """One epoch: per batch, the pixel sum and the boxes."""
    return [(torch.stack(images).sum().item(), [t["boxes"].tolist() for t in targets]) for images, targets in loader]


def test_images_are_resized_to_the_longer_side_with_their_boxes(tmp_path):
    loader = DetectionLoader(square_items(tmp_path, 3), 2, "cpu", max_side=96)
    images, targets = next(iter(loader))
    assert [tuple(im.shape) for im in images] == [(3, 64, 96)] * 2
    assert images[0].dtype == torch.float32 and 0.0 <= float(images[0].min()) and float(images[0].max()) == 1.0
    assert targets[1]["boxes"].tolist() == [[2.0, 8.0, 22.0, 28.0]] and targets[1]["labels"].dtype == torch.int64
    assert images[1][:, 9:27, 3:21].min() > 0.9 and images[1][:, 30:, :].max() == 0.0  # the square moved with it
    truth = loader.truth[1]
    assert (truth.width, truth.height) == (96, 64) and truth.area.tolist() == [400.0]
    assert len(loader) == 2 and loader.num_samples == 3


def test_resize_longer_keeps_the_aspect_and_reports_the_scale():
    resized, scale = resize_longer(np.zeros((100, 50, 3), dtype=np.uint8), 40)
    assert resized.shape == (40, 20, 3) and scale == pytest.approx(0.4)
    same, one = resize_longer(np.zeros((10, 20, 3), dtype=np.uint8), None)
    assert same.shape == (10, 20, 3) and one == 1.0


@pytest.mark.parametrize("augment", ["none", "standard"])
def test_the_order_and_the_draws_come_from_the_generator(tmp_path, augment):
    items = square_items(tmp_path, 10)

    def epochs(seed: int, count: int = 2):
        generator = torch.Generator().manual_seed(seed)
        loader = DetectionLoader(items, 4, "cpu", shuffle=True, augment=build_detection_augmentation(augment),
                                 generator=generator)
        return [summary(loader) for _ in range(count)], generator

    (first, second), _ = epochs(0)
    again, _ = epochs(0)
    assert again == [first, second] and first != second
    assert epochs(1)[0][0] != first
    # A resumed run restores the generator as it was at the epoch's start and gets the same epoch.
    generator = torch.Generator().manual_seed(0)
    loader = DetectionLoader(items, 4, "cpu", shuffle=True, augment=build_detection_augmentation(augment),
                             generator=generator)
    list(loader)
    state = generator.get_state()
    assert summary(loader) == second
    generator.set_state(state)
    assert summary(loader) == second


def test_ranks_take_disjoint_equal_shards_of_one_permutation(tmp_path):
    items = square_items(tmp_path, 7)
    shards = [DetectionLoader(items, 2, "cpu", shuffle=True, generator=torch.Generator().manual_seed(5), rank=rank,
                              world_size=2) for rank in (0, 1)]
    seen = [lefts(shard) for shard in shards]
    assert all(shard.num_samples == 4 and len(shard) == 2 for shard in shards)
    assert sorted(set(seen[0] + seen[1])) == list(range(7))  # every image, the 8th slot repeats one
    assert len(set(seen[0]) & set(seen[1])) == 1
    whole = lefts(DetectionLoader(items, 8, "cpu", shuffle=True, generator=torch.Generator().manual_seed(5)))
    assert seen[0] == whole[0::2] and seen[1] == (whole + whole[:1])[1::2]


def test_a_flip_mirrors_the_box(tmp_path):
    item = square_items(tmp_path, 6)[5]
    loader = DetectionLoader([item], 1, "cpu")
    image, boxes, labels = loader.images[0], torch.from_numpy(item.boxes), torch.from_numpy(item.labels)
    light = build_detection_augmentation("light")
    generator = torch.Generator().manual_seed(0)
    outcomes = set()
    for _ in range(12):
        out, out_boxes, out_labels = light(image, boxes, labels, generator)
        flipped = out_boxes.tolist() == [[48 - 15, 4, 48 - 5, 14]]
        assert flipped or out_boxes.tolist() == [[5, 4, 15, 14]]
        assert torch.equal(out, image.flip(-1) if flipped else image) and out_labels.tolist() == [2]
        outcomes.add(flipped)
    assert outcomes == {True, False}


def test_standard_augmentation_keeps_boxes_on_the_objects(tmp_path):
    item = square_items(tmp_path, 20)[16]
    image = DetectionLoader([item], 1, "cpu").images[0]
    standard = build_detection_augmentation("standard")
    generator = torch.Generator().manual_seed(0)
    for _ in range(10):
        out, boxes, _ = standard(image, torch.from_numpy(item.boxes), torch.from_numpy(item.labels), generator)
        rows, cols = np.nonzero(out.float().mean(0).numpy() > 60)  # the square, whatever the colour jitter did
        drawn = [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]
        assert len(boxes) == 1 and np.abs(np.array(boxes[0].tolist()) - drawn).max() <= 1.5


def test_boxes_pushed_out_of_the_image_are_dropped_with_their_labels(tmp_path):
    image = torch.zeros(3, 32, 32, dtype=torch.uint8)
    boxes, labels = torch.tensor([[0.0, 0.0, 2.0, 2.0], [12.0, 12.0, 20.0, 20.0]]), torch.tensor([1, 2])
    standard = build_detection_augmentation("standard")
    generator = torch.Generator().manual_seed(0)
    counts = set()
    for _ in range(20):
        _, out_boxes, out_labels = standard(image, boxes, labels, generator)
        assert len(out_boxes) == len(out_labels) and 2 in out_labels.tolist()
        assert out_boxes.min() >= 0 and out_boxes.max() <= 32
        counts.add(len(out_boxes))
    assert counts == {1, 2}  # the corner box leaves the image when the scale jitter zooms in


def test_augmentation_leaves_the_global_random_state_alone():
    standard = build_detection_augmentation("standard")
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    standard(torch.zeros(3, 16, 16, dtype=torch.uint8), torch.tensor([[2.0, 2, 8, 8]]), torch.tensor([0]),
             torch.Generator().manual_seed(0))
    assert torch.equal(torch.rand(3), expected)


def test_an_unknown_level_is_refused_by_name():
    assert build_detection_augmentation("none") is None
    with pytest.raises(ConvlabError, match="--augment heavy: detection knows none, light, standard"):
        build_detection_augmentation("heavy")
