"""Image-folder input throughput: convlab's decoded-image cache vs torchvision ImageFolder + DataLoader.

The script writes JPEGs of 256x256 (10 class folders) to a temporary folder, then reads them as
training batches resized to 224x224 and normalized, for 2 epochs, with both pipelines:

- torchvision: ImageFolder(transform=Resize((224, 224)) + ToTensor + Normalize) and
  DataLoader(batch_size=64, shuffle=True, num_workers=2): every epoch decodes every JPEG.
- convlab streaming: epoch 1 decodes each JPEG once into the memory-mapped cache (the same PIL
  bilinear resize) and streams it; later epochs read the cache (StreamingLoader, normalized batches).

    python benchmarks/image_folder_throughput.py [--images 2000] [--epochs 2] [--quick]

Reported: images/s per epoch for each and the ratio convlab / torchvision (higher is faster).
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def write_jpegs(root: Path, count: int, size: int = 256, classes: int = 10) -> None:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (classes, 8, 8, 3), dtype=np.uint8)
    for i in range(count):
        label = i % classes
        folder = root / f"class{label}"
        folder.mkdir(parents=True, exist_ok=True)
        # A smooth class pattern plus noise: realistic JPEG sizes, not a flat colour.
        pattern = Image.fromarray(base[label]).resize((size, size), Image.Resampling.BILINEAR)
        noise = rng.integers(-40, 40, (size, size, 3))
        pixels = np.clip(np.asarray(pattern, dtype=np.int64) + noise, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:05d}.jpg", quality=90)


def torchvision_epochs(root: Path, size: int, epochs: int, batch_size: int) -> list[float]:
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    transform = transforms.Compose([transforms.Resize((size, size)), transforms.ToTensor(),
                                    transforms.Normalize(MEAN, STD)])
    dataset = datasets.ImageFolder(str(root), transform=transform)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=2)
    rates = []
    for _ in range(epochs):
        started, seen = time.perf_counter(), 0
        for images, labels in loader:
            seen += len(labels)
        rates.append(seen / (time.perf_counter() - started))
    return rates


def convlab_epochs(root: Path, size: int, epochs: int, batch_size: int) -> list[float]:
    from convlab.data.batches import Normalization
    from convlab.data.imagefolder import list_images
    from convlab.data.streaming import StreamingLoader, build_decoded_cache
    from convlab.training.performance import set_threads

    set_threads(0, torch.device("cpu"))  # as `convlab train` does: the idle cores only

    files = list_images(root)
    labels = np.array([sorted({p.parent.name for p in files}).index(p.parent.name) for p in files])
    norm = Normalization(MEAN, STD)
    rates = []
    started = time.perf_counter()
    cache = build_decoded_cache(files, 3, size)  # epoch 1 pays the decoding, once
    if cache is None:
        raise SystemExit("no room on the disk for the decoded-image cache; set CONVLAB_HOME elsewhere")
    loader = StreamingLoader(cache, labels, None, batch_size, norm, torch.device("cpu"), shuffle=True)
    for epoch in range(epochs):
        if epoch:
            started = time.perf_counter()
        seen = 0
        for images, batch_labels in loader:
            seen += len(batch_labels)
        rates.append(seen / (time.perf_counter() - started))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000, help="JPEGs to generate (default: 2000)")
    parser.add_argument("--epochs", type=int, default=2, help="passes over the images (default: 2)")
    parser.add_argument("--size", type=int, default=224, help="training resolution (default: 224)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--quick", action="store_true", help="200 images, for a smoke run")
    args = parser.parse_args()
    count = 200 if args.quick else args.images

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "images"
        write_jpegs(root, count)
        os.environ["CONVLAB_HOME"] = str(Path(tmp) / "home")  # a fresh cache: epoch 1 really decodes
        print(f"{count} JPEGs of 256x256 -> {args.size}x{args.size}, batch {args.batch_size}, "
              f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
        tv = torchvision_epochs(root, args.size, args.epochs, args.batch_size)
        cl = convlab_epochs(root, args.size, args.epochs, args.batch_size)
    print("\n| epoch | torchvision ImageFolder + DataLoader(num_workers=2) img/s | convlab streaming img/s | ratio |")
    print("| ---: | ---: | ---: | ---: |")
    for epoch, (a, b) in enumerate(zip(tv, cl), start=1):
        print(f"| {epoch} | {a:,.0f} | {b:,.0f} | {b / a:.2f}x |")
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
