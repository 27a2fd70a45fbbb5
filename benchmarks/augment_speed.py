"""Augmentation cost on the in-memory loader: images/s of each --augment policy against --augment none.

Two numbers per policy, over the same training images (uint8 in memory, batches of 128, shuffled):
- loader: the BatchLoader alone (slice, augment, normalize), no model;
- loader + step: with a training step (forward, backward, SGD) of `--model` after each batch, as `convlab
  train` runs them one after the other on a CPU: 1 / (1 / loader + 1 / step), the step's rate measured in the
  same round on batches of the same size. Timing the step once per round rather than beside every policy keeps
  the load's swings on a shared machine out of the comparison; it says whether augmentation is the bottleneck.
The v2 policies also run once per image (groups of 1) to show what the groups of POLICY_GROUP images save.
Policies run in interleaved rounds and the median round is kept, so a busy machine slows them alike; quote the
ratios against `none` of the same run.

    python benchmarks/augment_speed.py --data imagefolder:FOLDER [--image-size 32] [--images 10000] [--rounds 3]
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

POLICIES = ["none", "standard", "photo", "randaugment", "trivialaugment", "autoaugment", "augmix"]
BATCH = 128


def load_images(data: str, size: int, count: int):
    """`count` training images of `data` at an even stride (every class in a sorted folder), uint8 NCHW."""
    from convlab.data.arrays import ImageArrays
    from convlab.data.registry import load_dataset

    # streaming: the decoded images stay cached on disk for the next run of the benchmark
    train = load_dataset(data, image_size=size, loader="streaming").train
    rows = np.linspace(0, len(train.labels) - 1, min(count, len(train.labels))).astype(np.int64)
    return ImageArrays(np.ascontiguousarray(train.images[rows]), train.labels[rows]), train


def loader_for(policy: str, erasing: float, group: int, arrays, seed: int):
    from convlab.data import augment as augment_module
    from convlab.data.augment import build_augmentation, build_erasing
    from convlab.data.batches import BatchLoader, Normalization

    augment_module.POLICY_GROUP = group  # read at each call: 1 runs the policy image by image

    norm = Normalization.of(arrays.images)
    augment = build_augmentation(policy, arrays.images.shape[-1], hflip=True)
    return BatchLoader(arrays, BATCH, norm, torch.device("cpu"), shuffle=True, augment=augment,
                       erase=build_erasing(erasing), generator=torch.Generator().manual_seed(seed))


def images_per_second(loader) -> float:
    started, seen = time.perf_counter(), 0
    for images, labels in loader:
        seen += len(labels)
    return seen / (time.perf_counter() - started)


def step_images_per_second(step, batches: list) -> float:
    started = time.perf_counter()
    for images, labels in batches:
        step(images, labels)
    return sum(len(labels) for _, labels in batches) / (time.perf_counter() - started)


def training_step(model_name: str, channels: int, classes: int, size: int):
    from convlab.models.registry import create_model

    model = create_model(model_name, channels, classes, (size, size), 0.0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step(images, labels):
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(images), labels).backward()
        optimizer.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="a dataset name, e.g. imagefolder:FOLDER of 32x32 photos")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--model", default="small-cnn")
    parser.add_argument("--step-batches", type=int, default=20, help="batches the step's rate is timed on")
    parser.add_argument("--erasing", type=float, default=0.25, help="the erasing row's probability")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from convlab.data.augment import POLICY_GROUP

    arrays, _ = load_images(args.data, args.image_size, args.images)
    channels, size = arrays.images.shape[1], arrays.images.shape[-1]
    classes = int(arrays.labels.max()) + 1
    rows = [(policy, 0.0, POLICY_GROUP) for policy in POLICIES] + \
        [("none", args.erasing, POLICY_GROUP), ("randaugment", args.erasing, POLICY_GROUP)] + \
        [(policy, 0.0, 1) for policy in POLICIES[3:]]
    loader_rates = {row: [] for row in rows}
    step_rates = []
    for row in rows:  # warm-up: imports, caches and first-call costs stay out of the timed rounds
        next(iter(loader_for(*row, arrays, 0)))
    batches = [batch for _, batch in zip(range(args.step_batches), loader_for("none", 0.0, 1, arrays, 0))]
    step = training_step(args.model, channels, classes, size)
    step(*batches[0])
    for round_ in range(args.rounds):
        step_rates.append(step_images_per_second(step, batches))
        for row in rows:
            loader_rates[row].append(images_per_second(loader_for(*row, arrays, round_)))

    step_rate = statistics.median(step_rates)
    with_step = {row: 1 / (1 / statistics.median(rates) + 1 / step_rate) for row, rates in loader_rates.items()}
    base_loader = statistics.median(loader_rates[("none", 0.0, POLICY_GROUP)])
    base_step = with_step[("none", 0.0, POLICY_GROUP)]
    print(f"{len(arrays.labels)} images of {channels}x{size}x{size}, batches of {BATCH}, {args.threads} thread(s), "
          f"median of {args.rounds} interleaved rounds; the {args.model} step alone: {step_rate:,.0f} img/s")
    print("| --augment | --erasing | policy draws | loader img/s | vs none | loader + step img/s | vs none |")
    print("| --- | ---: | --- | ---: | ---: | ---: | ---: |")
    for row in rows:
        policy, erasing, group = row
        loader, step = statistics.median(loader_rates[row]), with_step[row]
        draws = "-" if policy in POLICIES[:3] else f"per {group} images" if group > 1 else "per image"
        print(f"| {policy} | {erasing:g} | {draws} | {loader:,.0f} | {loader / base_loader:.2f}x | {step:,.0f} | "
              f"{step / base_step:.2f}x |")


if __name__ == "__main__":
    main()
