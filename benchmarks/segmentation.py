"""Penn-Fudan people masks: torchvision's segmentation reference as a plain PyTorch loop beside convlab, same models.

    python benchmarks/segmentation.py DATA_DIR [--epochs 5] [--image-size 320] [--threads 2]
    python benchmarks/segmentation.py DATA_DIR --budget-minutes 20 [--image-size 320] [--threads 2]

DATA_DIR holds the kit's pennfudan/semantic/{images,masks} (170 PNGs, masks 0 background / 1 person) and
mobilenet_v2_imagenet.safetensors. The first 120 images by name train, the last 50 validate; a temporary folder
of links (train/ and test/, each with images/ and masks/, and classes.txt) gives convlab exactly that split.

Two models, each trained twice, every run in its own process, one after the other:
  lraspp: lraspp_mobilenet_v3_large from random weights;
  unet:   the U-Net on MobileNetV2's ImageNet features, every layer trained.
(a) torchvision's segmentation reference (references/segmentation/train.py) written out: a Dataset that decodes
    each image every epoch, the longer side resized to --image-size and padded to a square (mask padding 255),
    random horizontal flips, batch 4, cross-entropy with ignore_index 255 (plus 0.5 x the auxiliary head's where
    the model has one: neither of these has), SGD lr 0.01 momentum 0.9 weight decay 1e-4, lr x (1 - step /
    total)^0.9 per batch, ImageNet normalization; the model built by convlab's build_segmenter, so both sides
    train the same network. Validation: each image's longer side resized, the logits resized back to the image
    (bilinear), scored at the original size by convlab.segmentation.metrics.segmentation_metrics.
(b) convlab train / finetune with the same optimizer, schedule (--schedule poly), batch, --augment light and
    image size; its metrics.csv gives the seconds per epoch, its metrics.json the validation mIoU.
The table gives seconds per epoch (median), the whole run (process start to exit) and validation mIoU, and
(b)/(a) ratios. Then the tiled-prediction throughput of the last model's trained (b) run on a 2000 x 2000 image
(--big-side; Penn-Fudan images mirrored into it): `probabilities(image, 255, tile=--image-size, overlap=0.25)`
against the one resized pass, megapixels per second, median of 3. --models runs one model only, --keep DIR keeps
the links and the runs.

--budget-minutes M trains (b) unet alone: one epoch to time an epoch, then as many epochs as that rate fits in
M minutes, and prints the mIoU reached and the time it took.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TRAIN, VAL = 120, 50  # the first 120 images by name train, the last 50 validate
CLASSES = ["background", "person"]

SIDE_A = r'''
import json, os, sys, time
import numpy as np, torch
import torch.nn.functional as F
from PIL import Image
from convlab.segmentation.metrics import segmentation_metrics
from convlab.segmentation.models import build_segmenter

root, model_name, weights, epochs, side, threads = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), \
    int(sys.argv[5]), int(sys.argv[6])
torch.manual_seed(0); torch.set_num_threads(threads)
MEAN, STD = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)

def load(split, name):
    image = Image.open(f"{root}/{split}/images/{name}").convert("RGB")
    return image, Image.open(f"{root}/{split}/masks/{name}")

def resized(image, mask=None):
    scale = side / max(image.size)
    size = (round(image.width * scale), round(image.height * scale))
    return image.resize(size, Image.BILINEAR), None if mask is None else mask.resize(size, Image.NEAREST)

def tensor(image):
    return (torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 255 - MEAN) / STD

class PennFudan(torch.utils.data.Dataset):
    """The reference's training transforms: resize, flip, to tensor, normalize, pad to side x side (mask 255)."""
    def __init__(self):
        self.names = sorted(os.listdir(f"{root}/train/images"))
    def __len__(self):
        return len(self.names)
    def __getitem__(self, i):
        image, mask = resized(*load("train", self.names[i]))
        x, y = tensor(image), torch.from_numpy(np.array(mask)).long()
        if torch.rand(1) < 0.5:
            x, y = x.flip(-1), y.flip(-1)
        pad = (0, side - x.shape[2], 0, side - x.shape[1])
        return F.pad(x, pad), F.pad(y, pad, value=255)

if model_name == "unet":
    model = build_segmenter("unet", 2, backbone="torchvision:mobilenet_v2", backbone_weights=weights)
else:
    model = build_segmenter("lraspp_mobilenet_v3_large", 2)
train = torch.utils.data.DataLoader(PennFudan(), batch_size=4, shuffle=True, drop_last=False)
params = [p for p in model.parameters() if p.requires_grad]
optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=1e-4)
total = len(train) * epochs
scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: (1 - step / total) ** 0.9)
seconds = []
for epoch in range(epochs):
    started = time.perf_counter()
    model.train()
    for x, y in train:
        out = model(x)
        loss = F.cross_entropy(out["out"], y, ignore_index=255)
        if out["aux"] is not None:
            loss = loss + 0.5 * F.cross_entropy(out["aux"], y, ignore_index=255)
        optimizer.zero_grad(); loss.backward(); optimizer.step(); scheduler.step()
    seconds.append(time.perf_counter() - started)
model.eval()
truth, predicted = [], []
with torch.inference_mode():
    for name in sorted(os.listdir(f"{root}/test/images")):
        image, mask = load("test", name)
        logits = model(tensor(resized(image)[0])[None])
        logits = F.interpolate(logits, size=(image.height, image.width), mode="bilinear", align_corners=False)
        truth.append(np.array(mask)); predicted.append(logits[0].argmax(0).numpy().astype(np.uint8))
miou = segmentation_metrics(truth, predicted, ["background", "person"])["miou"]
print(json.dumps({"epoch_seconds": seconds, "miou": miou}))
'''


def lay_out(source: Path, folder: Path) -> Path:
    """Links to the kit's semantic masks as a masks: folder: train/ (first 120 by name), test/ (last 50)."""
    names = sorted(p.name for p in (source / "images").glob("*.png"))
    if len(names) < TRAIN + VAL:
        sys.exit(f"{source / 'images'} holds {len(names)} PNGs, expected {TRAIN + VAL}: rebuild the data kit")
    for split, chosen in (("train", names[:TRAIN]), ("test", names[-VAL:])):
        for kind in ("images", "masks"):
            (folder / split / kind).mkdir(parents=True)
            for name in chosen:
                (folder / split / kind / name).symlink_to(source / kind / name)
    (folder / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    return folder


def side_a(folder: Path, model: str, weights: Path, args) -> dict:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", SIDE_A, str(folder), model, str(weights), str(args.epochs),
                           str(args.image_size), str(args.threads)], check=False, capture_output=True,
                          text=True)
    if done.returncode:
        sys.exit(f"side (a), {model}, failed:\n{done.stderr[-3000:]}")
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "whole": time.perf_counter() - started}


def convlab_command(folder: Path, model: str, weights: Path, epochs: int, args, out: Path) -> list[str]:
    """`convlab train` (lraspp) or `convlab finetune` (the ImageNet U-Net) as a user types it."""
    start = (["train", "--model", "lraspp_mobilenet_v3_large"] if model == "lraspp" else
             ["finetune", "--from", "torchvision:mobilenet_v2", "--weights", str(weights), "--strategy", "full"])
    return [sys.executable, "-m", "convlab", *start, "--data", f"masks:{folder}", "--optimizer", "sgd",
            "--lr", "0.01", "--momentum", "0.9", "--weight-decay", "1e-4", "--schedule", "poly", "--batch-size",
            "4", "--epochs", str(epochs), "--val-fraction", "0", "--image-size", str(args.image_size), "--augment",
            "light", "--threads", str(args.threads), "--quiet", "--out", str(out)]


def side_b(folder: Path, model: str, weights: Path, epochs: int, args, out: Path) -> dict:
    """One convlab run in its own process; its metrics.csv (seconds per epoch) and metrics.json (miou)."""
    started = time.perf_counter()
    subprocess.run(convlab_command(folder, model, weights, epochs, args, out), check=True)
    whole = time.perf_counter() - started
    with open(out / "metrics.csv", newline="") as rows:
        seconds = [float(row["seconds"]) for row in csv.DictReader(rows)]
    return {"epoch_seconds": seconds, "miou": json.loads((out / "metrics.json").read_text())["miou"],
            "whole": whole}


def big_image(source: Path, side: int) -> np.ndarray:
    """A side x side RGB image: Penn-Fudan images, each mirrored left-right every other column, row by row."""
    from PIL import Image

    canvas = np.zeros((side, side, 3), np.uint8)
    names = sorted((source / "images").glob("*.png"))
    y, x, row_height, i = 0, 0, 0, 0
    while y < side:
        tile = np.asarray(Image.open(names[i % len(names)]).convert("RGB"))
        tile = tile[:, ::-1] if i % 2 else tile
        h, w = min(tile.shape[0], side - y), min(tile.shape[1], side - x)
        canvas[y:y + h, x:x + w] = tile[:h, :w]
        x, row_height, i = x + w, max(row_height, h), i + 1
        if x >= side:
            x, y, row_height = 0, y + row_height, 0
    return canvas


def throughput(run_dir: Path, source: Path, tile: int, threads: int, side: int) -> dict:
    """Megapixels per second of the tiled pass and the whole-image (resized) pass, median of 3 each."""
    import torch

    from convlab.segmentation.run import load_segmentation_run

    torch.set_num_threads(threads)
    run, image = load_segmentation_run(run_dir, "cpu"), big_image(source, side)
    megapixels = image.shape[0] * image.shape[1] / 1e6
    rates = {}
    for name, kwargs in (("tiled", {"tile": tile, "overlap": 0.25}), ("whole image", {})):
        run.probabilities(image, 255, **kwargs)  # warm-up
        times = []
        for _ in range(3):
            started = time.perf_counter()
            run.probabilities(image, 255, **kwargs)
            times.append(time.perf_counter() - started)
        rates[name] = megapixels / statistics.median(times)
    return rates


def compare(folder: Path, source: Path, weights: Path, args, tmp: Path) -> None:
    rows = {}
    for model in args.models:
        rows[f"{model} (a) reference loop"] = side_a(folder, model, weights, args)
        rows[f"{model} (b) convlab"] = side_b(folder, model, weights, args.epochs, args, tmp / model)
    print(f"Penn-Fudan person/background, {args.epochs} epochs, longer side {args.image_size}, {args.threads} "
          f"threads; validation: the last {VAL} images")
    print("| model, side | s per epoch (median) | whole run s | val mIoU |")
    print("| --- | --- | --- | --- |")
    for name, row in rows.items():
        print(f"| {name} | {statistics.median(row['epoch_seconds']):.1f} | {row['whole']:.0f} | {row['miou']:.4f} |")
    for model in args.models:
        a, b = rows[f"{model} (a) reference loop"], rows[f"{model} (b) convlab"]
        ratio = statistics.median(b["epoch_seconds"]) / statistics.median(a["epoch_seconds"])
        print(f"{model} (b)/(a): epoch time {ratio:.2f}, whole run {b['whole'] / a['whole']:.2f}, "
              f"mIoU {b['miou'] - a['miou']:+.4f}")
    last = args.models[-1]
    rates = throughput(tmp / last, source, args.image_size, args.threads, args.big_side)
    print(f"\n{last} (b) on a {args.big_side}x{args.big_side} image, median of 3: tiled (tile {args.image_size}, "
          f"overlap 0.25) {rates['tiled']:.2f} MP/s; whole image resized to {args.image_size}: "
          f"{rates['whole image']:.2f} MP/s")


def budget(folder: Path, weights: Path, args, tmp: Path) -> None:
    """(b) unet for as many epochs as one epoch's time says fit in --budget-minutes."""
    probe = side_b(folder, "unet", weights, 1, args, tmp / "probe")
    overhead = probe["whole"] - probe["epoch_seconds"][0]  # start-up, loading, the final evaluation
    epochs = max(1, math.floor((args.budget_minutes * 60 - overhead) / probe["epoch_seconds"][0]))
    run = side_b(folder, "unet", weights, epochs, args, tmp / "budget")
    print(f"unet (b), budget {args.budget_minutes:g} min, longer side {args.image_size}, {args.threads} threads: "
          f"{epochs} epochs (one took {probe['epoch_seconds'][0]:.0f} s), {run['whole'] / 60:.1f} min in all, "
          f"val mIoU {run['miou']:.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--image-size", type=int, default=320)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models", nargs="+", choices=["lraspp", "unet"], default=["lraspp", "unet"])
    parser.add_argument("--big-side", type=int, default=2000, help="the side of the image tiled prediction is timed on")
    parser.add_argument("--keep", type=Path, help="an empty folder for the data links and runs, kept afterwards")
    parser.add_argument("--budget-minutes", type=float, help="train convlab's U-Net alone for this long instead")
    args = parser.parse_args()
    source, weights = args.data_dir / "pennfudan" / "semantic", args.data_dir / "mobilenet_v2_imagenet.safetensors"
    for needed in (source / "images", source / "masks", weights):
        if not needed.exists():
            sys.exit(f"{needed} is missing: build the data kit into {args.data_dir}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = args.keep or tmp
        folder = lay_out(source, Path(tmp) / "pennfudan")
        if args.budget_minutes:
            budget(folder, weights, args, Path(tmp))
        else:
            compare(folder, source, weights, args, Path(tmp))


if __name__ == "__main__":
    main()
