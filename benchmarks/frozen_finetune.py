"""The texts' frozen-backbone recipe (ResNet-50, GAP -> Dense(1024, relu) -> Dense(classes), 10 epochs), timed.

Side by side in one invocation, each contender its own process, so a time is everything a user waits for
(interpreter start, imports, decoding the images, training, the test pass, writing a run folder):

  (a) a plain PyTorch loop that freezes the backbone (requires_grad False, eval mode: Keras' `trainable=False`)
      and recomputes it for every batch of every epoch;
  (b) convlab finetune --strategy linear-probe --head mlp:1024 --no-feature-cache (the same work);
  (c) the same with the feature cache (computed in the run: each convlab row gets a fresh $CONVLAB_HOME);
  (d) (c) with --augment light --feature-views V (V augmented views per image cached);
  a Keras row when tensorflow is installed.

    python benchmarks/frozen_finetune.py [--images 2000] [--epochs 10] [--views 4] [--weights PATH]
                                         [--data imagefolder:PATH]

Without --data, --images generated 224x224 RGB images in 10 classes (a colour and a stripe direction per
class, plus noise) are written to a temporary folder (train/ and test/, the test split a tenth the size).
Without --weights the backbone has torchvision's random initialisation: the time does not depend on the weights.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CLASSES = 10
SIZE = 224
BATCH = 32  # Keras' default batch size, used by every contender

PLAIN_LOOP = r'''
import json, sys, time
from pathlib import Path
import numpy as np
import torch, torchvision
from PIL import Image
from torch import nn

root, weights, epochs, batch = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
torch.manual_seed(0)
def load(split):
    classes = sorted(p.name for p in (root / split).iterdir())
    files = [(f, i) for i, c in enumerate(classes) for f in sorted((root / split / c).iterdir())]
    x = np.stack([np.asarray(Image.open(f).convert("RGB").resize((224, 224))) for f, _ in files])
    x = torch.from_numpy(x).permute(0, 3, 1, 2).float().div(255)
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    return (x - mean) / std, torch.tensor([i for _, i in files])
train_x, train_y = load("train")
test_x, test_y = load("test")
backbone = torchvision.models.resnet50(weights=None)
backbone.load_state_dict(torch.load(weights, weights_only=True))
backbone.fc = nn.Identity()  # include_top=False, pooling="avg"
for p in backbone.parameters():
    p.requires_grad_(False)  # trainable = False
backbone.eval()  # frozen BatchNorm uses its statistics, as Keras does for a non-trainable layer
head = nn.Sequential(nn.Linear(2048, 1024), nn.ReLU(), nn.Linear(1024, int(train_y.max()) + 1))
optimizer = torch.optim.Adam(head.parameters(), lr=1e-3)
loss_fn = nn.CrossEntropyLoss()
for epoch in range(1, epochs + 1):
    start = time.perf_counter()
    order = torch.randperm(len(train_y))
    for i in range(0, len(order), batch):
        index = order[i:i + batch]
        loss = loss_fn(head(backbone(train_x[index])), train_y[index])  # the backbone again, every epoch
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    print(json.dumps({"epoch": epoch, "seconds": time.perf_counter() - start}), flush=True)
with torch.no_grad():
    logits = torch.cat([head(backbone(test_x[i:i + 64])) for i in range(0, len(test_y), 64)])
print(json.dumps({"accuracy": (logits.argmax(1) == test_y).float().mean().item()}), flush=True)
'''

KERAS = r'''
import json, sys, time
from pathlib import Path
import keras
root, epochs, batch = Path(sys.argv[1]), int(sys.argv[3]), int(sys.argv[4])
train = keras.utils.image_dataset_from_directory(root / "train", image_size=(224, 224), batch_size=batch)
test = keras.utils.image_dataset_from_directory(root / "test", image_size=(224, 224), batch_size=batch)
base = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(224, 224, 3))
base.trainable = False
inputs = keras.Input((224, 224, 3))
x = keras.layers.GlobalAveragePooling2D()(base(keras.applications.resnet50.preprocess_input(inputs), training=False))
x = keras.layers.Dense(1024, activation="relu")(x)
model = keras.Model(inputs, keras.layers.Dense(len(train.class_names), activation="softmax")(x))
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
for epoch in range(1, epochs + 1):
    start = time.perf_counter()
    model.fit(train, epochs=1, verbose=0)
    print(json.dumps({"epoch": epoch, "seconds": time.perf_counter() - start}), flush=True)
print(json.dumps({"accuracy": float(model.evaluate(test, verbose=0)[1])}), flush=True)
'''


def make_images(root: Path, train: int, test: int, seed: int = 0) -> None:
    """train/CLASS/*.png and test/CLASS/*.png: a colour and a stripe direction per class, plus noise."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    for split, count in (("train", train), ("test", test)):
        for i in range(count):
            label = i % CLASSES
            colour = np.array([(label * 37) % 256, (label * 91) % 256, (label * 151) % 256], np.float32)
            stripes = np.sin((xx * np.cos(label) + yy * np.sin(label)) / 6.0)[..., None] * 60
            pixels = colour * 0.6 + 50 + stripes + rng.normal(0, 30, (SIZE, SIZE, 3))
            folder = root / split / f"class{label}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(folder / f"{i:05d}.png")


def run_script(source: str, root: Path, weights: Path, epochs: int) -> dict:
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", source, str(root), str(weights), str(epochs), str(BATCH)],
                          capture_output=True, text=True)
    whole = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"baseline failed:\n{proc.stderr[-2000:]}")
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    epochs_s = [r["seconds"] for r in rows if "epoch" in r]
    return {"whole_s": whole, "epoch_s": epochs_s, "accuracy": rows[-1]["accuracy"]}


def run_convlab(root: Path, weights: Path, epochs: int, extra: list[str]) -> dict:
    """convlab finetune as a user runs it, with a fresh $CONVLAB_HOME (so a cache is computed in the run)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        env = {**os.environ, "CONVLAB_HOME": str(Path(tmp) / "home")}
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "convlab", "finetune", "--from", "torchvision:resnet50",
                               "--weights", str(weights), "--data", f"imagefolder:{root}", "--image-size",
                               str(SIZE), "--strategy", "linear-probe", "--head", "mlp:1024", "--epochs",
                               str(epochs), "--batch-size", str(BATCH), "--optimizer", "adam", "--lr", "0.001",
                               "--schedule", "none", "--weight-decay", "0", "--val-fraction", "0", "--quiet",
                               "--out", str(out), *extra], capture_output=True, text=True, env=env)
        whole = time.perf_counter() - started
        if proc.returncode != 0:
            raise SystemExit(f"convlab failed:\n{proc.stderr[-2000:]}")
        metrics = json.loads((out / "metrics.json").read_text())
        history = (out / "metrics.csv").read_text().splitlines()
    header = history[0].split(",")
    epoch_s = [float(line.split(",")[header.index("seconds")]) for line in history[1:]]
    return {"whole_s": whole, "epoch_s": epoch_s, "accuracy": metrics["accuracy"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000, help="generated training images (default: 2000)")
    parser.add_argument("--epochs", type=int, default=10, help="epochs of head training (default: 10)")
    parser.add_argument("--views", type=int, default=4, help="augmented views per image for row (d) (default: 4)")
    parser.add_argument("--weights", type=Path, help="a resnet50 state dict (.pt); default: random weights")
    parser.add_argument("--data", help="imagefolder:PATH with train/CLASS and test/CLASS instead of generated images")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.data:
            root = Path(args.data.removeprefix("imagefolder:"))
            size = f"the images of {root}"
        else:
            root = tmp / "images"
            make_images(root, args.images, max(args.images // 10, CLASSES))
            size = f"{args.images} generated {SIZE}x{SIZE} training images ({max(args.images // 10, CLASSES)} test)"
        weights = args.weights
        if weights is None:
            import torch
            import torchvision

            torch.manual_seed(0)
            weights = tmp / "resnet50-random.pt"
            torch.save(torchvision.models.resnet50(weights=None).state_dict(), weights)

        contenders = {
            "(a) plain PyTorch loop, backbone recomputed": lambda: run_script(PLAIN_LOOP, root, weights, args.epochs),
            "(b) convlab, no cache": lambda: run_convlab(root, weights, args.epochs,
                                                         ["--augment", "none", "--no-feature-cache"]),
            "(c) convlab, feature cache": lambda: run_convlab(root, weights, args.epochs, ["--augment", "none"]),
            f"(d) convlab, --augment light --feature-views {args.views}": lambda: run_convlab(
                root, weights, args.epochs, ["--augment", "light", "--feature-views", str(args.views)]),
        }
        keras_note = None
        if importlib.util.find_spec("tensorflow") is not None:
            contenders["Keras, base_model.trainable = False"] = lambda: run_script(KERAS, root, weights, args.epochs)
        else:
            keras_note = "Keras, base_model.trainable = False"

        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        print(f"{size}, {args.epochs} epochs, batch {BATCH}; load average at start {load:.2f} on "
              f"{os.cpu_count()} cores", flush=True)
        results = {}
        for name, run in contenders.items():
            results[name] = run()
            print(f"  {name}: whole {results[name]['whole_s']:.1f}s", flush=True)

    base = results["(a) plain PyTorch loop, backbone recomputed"]["whole_s"]
    print("\n| contender | whole run s | s per epoch after the first | test accuracy | (a) whole / this whole |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, r in results.items():
        later = statistics.median(r["epoch_s"][1:]) if len(r["epoch_s"]) > 1 else float("nan")
        print(f"| {name} | {r['whole_s']:.1f} | {later:.2f} | {r['accuracy']:.3f} | {base / r['whole_s']:.1f}x |")
    if keras_note:
        print(f"| {keras_note} | tensorflow is not installed here: not run | | | |")
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
