"""Mixup and CutMix: soft targets that sum to 1 and mix each image with its batch neighbour as the images are
mixed; the cross-entropy on them (smoothed) as computed by hand; seeded runs that train and repeat exactly."""
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import convlab
from convlab.data.arrays import ImageArrays
from convlab.data.batches import BatchLoader, Normalization
from convlab.data.mixing import build_mixing
from convlab.layout import CHECKPOINTS
from convlab.tasks.registry import find_task
from convlab.training.checkpoint import load_checkpoint
from convlab.training.loop import classify_step

CLASSES = 5


def _batch(n=32, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g, dtype=torch.float64).float(), \
        torch.randint(0, CLASSES, (n,), generator=g)


def _one_hot(labels):
    return torch.nn.functional.one_hot(labels, CLASSES).float()


def test_mixup_blends_each_image_with_the_one_before_it_by_the_targets_share():
    images, labels = _batch()
    mixed, targets = build_mixing(0.4, 0.0, CLASSES)(images, labels, torch.Generator().manual_seed(1))
    assert targets.shape == (32, CLASSES)
    torch.testing.assert_close(targets.sum(1), torch.ones(32))
    differ = labels != labels.roll(1)
    lam = float(targets[differ.nonzero()[0, 0], labels[differ][0]])  # one lambda for the whole batch
    assert 0.0 < lam < 1.0
    torch.testing.assert_close(targets, lam * _one_hot(labels) + (1 - lam) * _one_hot(labels.roll(1)))
    torch.testing.assert_close(mixed, lam * images + (1 - lam) * images.roll(1, 0))


def test_cutmix_pastes_one_box_of_the_neighbour_and_the_targets_share_is_its_area():
    images, labels = _batch(size=16)
    mixed, targets = build_mixing(0.0, 1.0, CLASSES)(images, labels, torch.Generator().manual_seed(3))
    torch.testing.assert_close(targets.sum(1), torch.ones(32))
    from_neighbour = (mixed == images.roll(1, 0)).all(1) & (mixed != images).any(1)  # (N, H, W)
    kept = (mixed == images).all(1)
    assert (from_neighbour | kept).all()
    box = from_neighbour[0]
    rows, cols = box.any(1).nonzero()[:, 0], box.any(0).nonzero()[:, 0]
    assert box.sum() == len(rows) * len(cols)  # a rectangle
    assert (from_neighbour == box).all()  # the same box in every image
    share = 1 - float(box.sum()) / 256
    torch.testing.assert_close(targets, share * _one_hot(labels) + (1 - share) * _one_hot(labels.roll(1)))


def test_both_switch_between_mixup_and_cutmix_per_batch():
    images, labels = _batch(size=16)
    mixing, kinds = build_mixing(0.4, 1.0, CLASSES), set()
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        mixed, _ = mixing(images, labels, g)
        pasted = ((mixed == images) | (mixed == images.roll(1, 0))).all()
        kinds.add("cutmix" if pasted else "mixup")
    assert kinds == {"mixup", "cutmix"}


def test_loader_mixes_the_shuffled_batch_with_its_seed():
    data = ImageArrays(np.random.default_rng(0).integers(0, 256, (40, 1, 8, 8), dtype=np.uint8),
                       np.arange(40) % CLASSES)
    norm = Normalization([0.5], [0.25])

    def batches(seed):
        loader = BatchLoader(data, 16, norm, torch.device("cpu"), shuffle=True,
                             mix=build_mixing(0.2, 0.0, CLASSES), generator=torch.Generator().manual_seed(seed))
        return list(loader)

    first, again = batches(0), batches(0)
    for (images, targets), (images2, targets2) in zip(first, again):
        assert targets.shape[1] == CLASSES and torch.equal(images, images2) and torch.equal(targets, targets2)
    assert not torch.equal(first[0][1], batches(1)[0][1])


def test_soft_target_loss_with_smoothing_equals_the_hand_computation():
    logits = torch.randn(6, CLASSES, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    targets = torch.softmax(torch.randn(6, CLASSES, generator=torch.Generator().manual_seed(1),
                                        dtype=torch.float64), 1)
    conf = convlab.config.Config()
    conf.optim.label_smoothing = 0.1
    loss = find_task("classify").loss(conf, None, "cpu")(logits, targets)
    smoothed = targets * 0.9 + 0.1 / CLASSES
    by_hand = -(smoothed * torch.log_softmax(logits, 1)).sum(1).mean()
    torch.testing.assert_close(loss, by_hand)


def test_classify_step_counts_hits_against_the_mixed_targets_larger_share():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 2.0]])
    targets = torch.tensor([[0.7, 0.3, 0.0], [0.6, 0.4, 0.0], [0.0, 0.45, 0.55]])
    model = torch.nn.Identity()
    loss, count, hits = classify_step(model, (logits, targets), torch.nn.CrossEntropyLoss())
    assert count == 3 and int(hits) == 2  # rows 0 and 2 agree with the larger share; row 1 does not
    by_hand = -(targets * torch.log_softmax(logits, 1)).sum(1).mean()
    torch.testing.assert_close(loss, by_hand)


def _weights(run_dir):
    return load_file(str(run_dir / "model.safetensors"))


@pytest.fixture(scope="module")
def mixed_runs(tmp_path_factory):
    """Two runs with the same seed and every new option (16x16 digits: photo policies need 16 pixels)."""
    out = tmp_path_factory.mktemp("mixing")
    flags = dict(data="digits", model="tiny-cnn", epochs=2, schedule="none", image_size=16, threads=1,
                 augment="randaugment", erasing=0.25, mixup=0.2, cutmix=1.0, label_smoothing=0.1, quiet=True)
    return [convlab.train(out=str(out / name), **flags) for name in ("a", "b")], out, flags


def test_a_mixed_run_trains_and_the_same_seed_repeats_it_exactly(mixed_runs):
    (first, second), _, _ = mixed_runs
    assert first.metrics["accuracy"] > 0.5  # 10 classes: chance is 0.1
    a, b = _weights(first.path), _weights(second.path)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resuming_a_mixed_run_ends_where_the_uninterrupted_run_did(mixed_runs):
    (first, _), out, flags = mixed_runs
    short = convlab.train(out=str(out / "short"), **{**flags, "epochs": 1})
    assert short.metrics["epochs_run"] == 1
    convlab.train(resume=str(out / "short"), epochs=2, quiet=True)
    whole = load_checkpoint(first.path / CHECKPOINTS / "last.safetensors")["model"]
    resumed = load_checkpoint(out / "short" / CHECKPOINTS / "last.safetensors")["model"]
    assert whole.keys() == resumed.keys()
    assert all(torch.equal(whole[key], resumed[key]) for key in whole)


def test_the_mixed_targets_are_named_in_the_output(tmp_path, capsys):
    from cli_output import run_cli

    code, out, _ = run_cli(capsys, "train", "--mixup", "0.2", "--epochs", "1", "--threads", "1", "--model",
                           "tiny-cnn", "--out", str(tmp_path / "run"))
    assert code == 0
    assert "note: train acc is measured against the mixed targets' larger share (--mixup/--cutmix)" in out


def test_streaming_loader_erases_and_mixes_as_seeded():
    from convlab.data.augment import build_augmentation, build_erasing
    from convlab.data.streaming import StreamingLoader

    images = np.random.default_rng(0).integers(0, 256, (40, 3, 16, 16), dtype=np.uint8)
    labels = np.arange(40) % CLASSES

    def batches(seed):
        return list(StreamingLoader(images, labels, None, 16, Normalization([0.5] * 3, [0.25] * 3),
                                    torch.device("cpu"), shuffle=True, augment=build_augmentation("photo", 16, True),
                                    erase=build_erasing(1.0), mix=build_mixing(0.0, 1.0, CLASSES),
                                    generator=torch.Generator().manual_seed(seed), workers=0))

    first, again = batches(0), batches(0)
    for (x, t), (x2, t2) in zip(first, again):
        assert torch.equal(x, x2) and torch.equal(t, t2)
        assert t.shape == (len(x), CLASSES)
        torch.testing.assert_close(t.sum(1), torch.ones(len(x)))
    assert not torch.equal(first[0][0], batches(1)[0][0])


@pytest.mark.parametrize("flag, value, fragment", [("--mixup", "-1", "must be >= 0.0"),
                                                   ("--cutmix", "-0.5", "must be >= 0.0"),
                                                   ("--erasing", "1.5", "must be <= 1.0")])
def test_bad_values_are_one_line_errors_naming_the_flag(capsys, tmp_path, flag, value, fragment):
    from cli_output import assert_one_line_error, run_cli

    code, _, err = run_cli(capsys, "train", flag, value, "--quiet", "--out", str(tmp_path / "run"))
    assert_one_line_error(code, err, f"invalid value for {flag}: {float(value)}", fragment)
