"""Penn-Fudan: the torchvision tutorial's plain PyTorch loop beside `convlab finetune`, same detector, same epochs.

    python benchmarks/detection.py DATA_DIR [--epochs 3] [--image-size 320] [--threads 2]

DATA_DIR holds the kit's pennfudan/ (COCO layout: the first 120 images train, the last 50 test) and
mobilenet_v2_imagenet.safetensors. Both sides train the same detector, built by convlab: the tutorial's second
model, a Faster R-CNN on MobileNetV2's ImageNet features (anchors 32-512 px scaled to the image size, RoIAlign
7x7, with convlab's 1x1 neck to 256 channels), every layer trained, images resized so their longer side is
--image-size.

(a) the tutorial's engine, written out: a Dataset that decodes each image every epoch, random horizontal flips,
    a DataLoader of batch 2, SGD lr 0.005 momentum 0.9 weight decay 5e-4, StepLR(3, 0.1), the first epoch's
    linear warm-up, evaluation by pycocotools on the 50 test images;
(b) convlab finetune --from torchvision:mobilenet_v2 --weights ... --strategy full with the same optimizer,
    batch and augmentation (no warm-up; schedule none equals StepLR(3) for up to 3 epochs).
Each side runs in its own process, one after the other; the table gives seconds per epoch (median), the whole
run and test mAP / AP50, and (b)/(a) ratios.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIDE_A = r'''
import json, math, sys, time
import numpy as np, torch
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from convlab.detection.models import build_detector

root, weights, epochs, side, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
torch.manual_seed(0); torch.set_num_threads(threads)

class PennFudan(torch.utils.data.Dataset):
    """The tutorial's dataset, reading the COCO file: decode, resize the longer side, flip, to tensor."""
    def __init__(self, split, train):
        self.coco, self.train = COCO(f"{root}/coco/annotations/instances_{split}.json"), train
        self.ids = sorted(self.coco.imgs)
    def __len__(self):
        return len(self.ids)
    def __getitem__(self, i):
        info = self.coco.imgs[self.ids[i]]
        image = Image.open(f"{root}/coco/images/{info['file_name']}").convert("RGB")
        scale = side / max(image.size)
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.BILINEAR)
        anns = self.coco.imgToAnns[self.ids[i]]
        boxes = torch.tensor([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                              for a in anns], dtype=torch.float32).reshape(-1, 4) * scale
        x = torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 255
        if self.train and torch.rand(1) < 0.5:
            x, boxes = x.flip(-1), torch.stack([x.shape[-1] - boxes[:, 2], boxes[:, 1], x.shape[-1] - boxes[:, 0],
                                                boxes[:, 3]], 1)
        return x, {"boxes": boxes, "labels": torch.zeros(len(anns), dtype=torch.int64)}, self.ids[i], scale

collate = lambda batch: tuple(zip(*batch))
train = torch.utils.data.DataLoader(PennFudan("train", True), batch_size=2, shuffle=True, collate_fn=collate)
test = torch.utils.data.DataLoader(PennFudan("val", False), batch_size=2, collate_fn=collate)
model = build_detector("fasterrcnn", 1, side, backbone="torchvision:mobilenet_v2", backbone_weights=weights)
params = [p for p in model.parameters() if p.requires_grad]
optimizer = torch.optim.SGD(params, lr=0.005, momentum=0.9, weight_decay=0.0005)
scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=3, gamma=0.1)
seconds = []
for epoch in range(epochs):
    started = time.perf_counter()
    model.train()
    warmup = None
    if epoch == 0:  # the tutorial engine's linear warm-up over the first epoch
        iters = min(1000, len(train) - 1)
        warmup = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: 0.001 + (1 - 0.001) * min(i, iters) / iters)
    for images, targets, _, _ in train:
        loss = sum(model(list(images), list(targets)).values())
        if not math.isfinite(loss.item()):
            sys.exit(f"loss is {loss.item()}")
        optimizer.zero_grad(); loss.backward(); optimizer.step()
        if warmup is not None:
            warmup.step()
    scheduler.step()
    seconds.append(time.perf_counter() - started)
model.eval()
results = []
with torch.inference_mode():
    for images, _, ids, scales in test:
        for out, image_id, scale in zip(model(list(images)), ids, scales):
            for box, score, label in zip(out["boxes"] / scale, out["scores"], out["labels"]):
                x1, y1, x2, y2 = box.tolist()
                results.append({"image_id": image_id, "category_id": int(label) + 1, "bbox": [x1, y1, x2 - x1, y2 - y1],
                                "score": float(score)})
gt = test.dataset.coco
evaluation = COCOeval(gt, gt.loadRes(results) if results else COCO(), "bbox")
evaluation.evaluate(); evaluation.accumulate(); evaluation.summarize()
print(json.dumps({"epoch_seconds": seconds, "map": float(evaluation.stats[0]), "map50": float(evaluation.stats[1])}))
'''


def side_b(root: Path, weights: Path, epochs: int, side: int, threads: int, out: Path) -> dict:
    """`convlab finetune` as a user types it; its metrics.csv and metrics.json."""
    command = [sys.executable, "-m", "convlab", "finetune", "--data", f"coco:{root}/coco", "--from",
               "torchvision:mobilenet_v2", "--weights", str(weights), "--strategy", "full", "--optimizer", "sgd",
               "--lr", "0.005", "--momentum", "0.9", "--weight-decay", "0.0005", "--schedule", "none",
               "--batch-size", "2", "--epochs", str(epochs), "--val-fraction", "0", "--image-size", str(side),
               "--augment", "light", "--threads", str(threads), "--quiet", "--out", str(out)]
    subprocess.run(command, check=True)
    rows = (out / "metrics.csv").read_text().splitlines()[1:]
    metrics = json.loads((out / "metrics.json").read_text())
    return {"epoch_seconds": [float(r.split(",")[5]) for r in rows], "map": metrics["map"], "map50": metrics["map50"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=320)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    root, weights = args.data_dir / "pennfudan", args.data_dir / "mobilenet_v2_imagenet.safetensors"
    for needed in (root / "coco", weights):
        if not needed.exists():
            sys.exit(f"{needed} is missing: build the data kit into {args.data_dir}")
    table = {}
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", SIDE_A, str(root), str(weights), str(args.epochs),
                               str(args.image_size), str(args.threads)], check=True, capture_output=True, text=True)
        table["(a) tutorial loop"] = {**json.loads(done.stdout.strip().splitlines()[-1]),
                                      "whole": time.perf_counter() - started}
        started = time.perf_counter()
        table["(b) convlab finetune"] = {**side_b(root, weights, args.epochs, args.image_size, args.threads,
                                                  Path(tmp) / "run"), "whole": time.perf_counter() - started}
    print(f"Penn-Fudan, Faster R-CNN on MobileNetV2 (ImageNet), {args.epochs} epochs, longer side {args.image_size}, "
          f"{args.threads} threads; test: the last 50 images")
    print("| side | s per epoch (median) | whole run s | test mAP | test AP50 |")
    print("| --- | --- | --- | --- | --- |")
    for name, row in table.items():
        print(f"| {name} | {statistics.median(row['epoch_seconds']):.1f} | {row['whole']:.0f} | {row['map']:.4f} | "
              f"{row['map50']:.4f} |")
    a, b = table.values()
    print(f"(b)/(a): epoch time {statistics.median(b['epoch_seconds']) / statistics.median(a['epoch_seconds']):.2f}, "
          f"whole run {b['whole'] / a['whole']:.2f}, mAP {b['map'] - a['map']:+.4f}")


if __name__ == "__main__":
    main()
