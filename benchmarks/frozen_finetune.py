"""The texts' frozen-backbone recipe (ResNet-50, GAP -> Dense(1024, relu) -> Dense(classes), 10 epochs), timed.

Side by side in one invocation, each contender its own process, so a time is everything a user waits for
(interpreter start, imports, decoding the images, training, the test pass, writing a run folder):

  (a) a plain PyTorch loop that freezes the backbone (requires_grad False, eval mode: Keras' `trainable=False`)
      and recomputes it for every batch of every epoch;
  (b) convlab finetune --strategy linear-probe --no-feature-cache with the plain loop's settings (the same work);
  (c) docs/fine-tuning.md's one-line recipe as written (the imagefolder recipe's settings; the feature cache is
      computed in the run: each convlab row gets a fresh $CONVLAB_HOME);
  (d) (b)'s settings with the cache, --augment light --feature-views V (V augmented views per image cached);
  a Keras row when tensorflow is installed (ResNet-50 shape only).

    python benchmarks/frozen_finetune.py [--images 2000] [--epochs 10] [--views 4] [--model resnet50]
                                         [--size 224] [--head mlp:1024] [--rows abcdk] [--repeats 1]
                                         [--weights PATH] [--data imagefolder:PATH]

Without --data, --images generated --size RGB images in 10 classes (a colour and a stripe direction per
class, plus noise) are written to a temporary folder (train/ and test/, the test split a tenth the size).
Without --weights the backbone has torchvision's random initialisation: the time does not depend on the weights.
--repeats N runs the rows N times in turn (side by side) and shows medians and the per-round ratios.
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
from dataclasses import dataclass
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
model_name, size, head_spec = sys.argv[5], int(sys.argv[6]), sys.argv[7]
torch.manual_seed(0)
def load(split):
    classes = sorted(p.name for p in (root / split).iterdir())
    files = [(f, i) for i, c in enumerate(classes) for f in sorted((root / split / c).iterdir())]
    x = np.stack([np.asarray(Image.open(f).convert("RGB").resize((size, size))) for f, _ in files])
    x = torch.from_numpy(x).permute(0, 3, 1, 2).float().div(255)
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    return (x - mean) / std, torch.tensor([i for _, i in files])
train_x, train_y = load("train")
test_x, test_y = load("test")
backbone = getattr(torchvision.models, model_name)(weights=None)
backbone.load_state_dict(torch.load(weights, weights_only=True))
width, classes = backbone.fc.in_features, int(train_y.max()) + 1
backbone.fc = nn.Identity()  # include_top=False, pooling="avg"
for p in backbone.parameters():
    p.requires_grad_(False)  # trainable = False
backbone.eval()  # frozen BatchNorm uses its statistics, as Keras does for a non-trainable layer
hidden = int(head_spec.split(":")[1]) if head_spec.startswith("mlp:") else 0
head = nn.Sequential(nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, classes)) if hidden else nn.Linear(width, classes)
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


@dataclass(frozen=True)
class Shape:
    model: str  # a torchvision ResNet name
    size: int  # input pixels per side (the generated images are this size too)
    head: str  # linear or mlp:WIDTH, for convlab and the plain loop alike


def make_images(root: Path, train: int, test: int, size: int, seed: int = 0) -> None:
    """train/CLASS/*.png and test/CLASS/*.png: a colour and a stripe direction per class, plus noise."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    for split, count in (("train", train), ("test", test)):
        for i in range(count):
            label = i % CLASSES
            colour = np.array([(label * 37) % 256, (label * 91) % 256, (label * 151) % 256], np.float32)
            stripes = np.sin((xx * np.cos(label) + yy * np.sin(label)) / 6.0)[..., None] * 60
            pixels = colour * 0.6 + 50 + stripes + rng.normal(0, 30, (size, size, 3))
            folder = root / split / f"class{label}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(folder / f"{i:05d}.png")


def run_script(source: str, root: Path, weights: Path, epochs: int, shape: Shape) -> dict:
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", source, str(root), str(weights), str(epochs), str(BATCH),
                           shape.model, str(shape.size), shape.head], capture_output=True, text=True)
    whole = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"baseline failed:\n{proc.stderr[-2000:]}")
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    epochs_s = [r["seconds"] for r in rows if "epoch" in r]
    return {"whole_s": whole, "epoch_s": epochs_s, "accuracy": rows[-1]["accuracy"]}


def documented_command(root: Path, weights: Path, epochs: int, shape: Shape) -> list[str]:
    """docs/fine-tuning.md's one-line frozen-backbone recipe, with this shape, random weights and the input size."""
    size = [] if shape.size == SIZE else ["--image-size", str(shape.size)]  # 224: the source's own size
    return ["finetune", "--from", f"torchvision:{shape.model}", "--strategy", "linear-probe", "--head", shape.head,
            "--epochs", str(epochs), "--data", f"imagefolder:{root}", "--weights", str(weights), *size]


# The plain loop's settings, for rows that do the plain loop's work (the documented row keeps the recipe's).
SAME_SETTINGS = ["--batch-size", str(BATCH), "--optimizer", "adam", "--lr", "0.001", "--schedule", "none",
                 "--weight-decay", "0", "--val-fraction", "0"]


def run_convlab(command: list[str]) -> dict:
    """convlab as a user runs it, with a fresh $CONVLAB_HOME (so a cache is computed in the run)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        env = {**os.environ, "CONVLAB_HOME": str(Path(tmp) / "home")}
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "convlab", *command, "--quiet", "--out", str(out)],
                              capture_output=True, text=True, env=env)
        whole = time.perf_counter() - started
        if proc.returncode != 0:
            raise SystemExit(f"convlab failed:\n{proc.stderr[-2000:]}")
        metrics = json.loads((out / "metrics.json").read_text())
        history = (out / "metrics.csv").read_text().splitlines()
    header = history[0].split(",")
    epoch_s = [float(line.split(",")[header.index("seconds")]) for line in history[1:]]
    cached = "features: computed in" in proc.stdout
    return {"whole_s": whole, "epoch_s": epoch_s, "accuracy": metrics["accuracy"], "cached": cached}


def contenders(root: Path, weights: Path, epochs: int, shape: Shape, views: int) -> dict:
    documented = documented_command(root, weights, epochs, shape)
    rows = {
        "a": ("(a) plain PyTorch loop, backbone recomputed",
              lambda: run_script(PLAIN_LOOP, root, weights, epochs, shape)),
        "b": ("(b) convlab, no cache", lambda: run_convlab(documented + SAME_SETTINGS + ["--augment", "none",
                                                                                           "--no-feature-cache"])),
        "c": ("(c) convlab, the documented command", lambda: run_convlab(documented)),
        "d": (f"(d) convlab, --augment light --feature-views {views}",
              lambda: run_convlab(documented + SAME_SETTINGS + ["--augment", "light", "--feature-views", str(views)])),
    }
    if importlib.util.find_spec("tensorflow") is not None and shape == Shape("resnet50", 224, "mlp:1024"):
        rows["k"] = ("Keras, base_model.trainable = False",
                     lambda: run_script(KERAS, root, weights, epochs, shape))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000, help="generated training images (default: 2000)")
    parser.add_argument("--epochs", type=int, default=10, help="epochs of head training (default: 10)")
    parser.add_argument("--views", type=int, default=4, help="augmented views per image for row (d) (default: 4)")
    parser.add_argument("--model", default="resnet50", help="torchvision ResNet (default: resnet50)")
    parser.add_argument("--size", type=int, default=SIZE, help=f"input size (default: {SIZE})")
    parser.add_argument("--head", default="mlp:1024", help="linear or mlp:WIDTH (default: mlp:1024)")
    parser.add_argument("--rows", default="abcdk", help="which rows to run (default: abcdk; k: Keras if installed)")
    parser.add_argument("--repeats", type=int, default=1, help="side-by-side rounds; medians are shown (default: 1)")
    parser.add_argument("--weights", type=Path, help="a state dict (.pt) of --model; default: random weights")
    parser.add_argument("--data", help="imagefolder:PATH with train/CLASS and test/CLASS instead of generated images")
    args = parser.parse_args()
    shape = Shape(args.model, args.size, args.head)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.data:
            root = Path(args.data.removeprefix("imagefolder:"))
            what = f"the images of {root}"
        else:
            root = tmp / "images"
            tests = max(args.images // 10, CLASSES)
            make_images(root, args.images, tests, args.size)
            what = f"{args.images} generated {args.size}x{args.size} training images ({tests} test)"
        weights = args.weights
        if weights is None:
            import torch
            import torchvision

            torch.manual_seed(0)
            weights = tmp / f"{args.model}-random.pt"
            torch.save(getattr(torchvision.models, args.model)(weights=None).state_dict(), weights)

        rows = {key: row for key, row in contenders(root, weights, args.epochs, shape, args.views).items()
                if key in args.rows}
        print(f"{args.model} at {args.size} px, head {args.head}, {what}, {args.epochs} epochs, batch {BATCH}; "
              f"load average at start {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores", flush=True)
        results: dict[str, list[dict]] = {name: [] for name, _ in rows.values()}
        for round_ in range(1, args.repeats + 1):
            for name, run in rows.values():
                results[name].append(run())
                print(f"  round {round_}: {name}: whole {results[name][-1]['whole_s']:.1f}s", flush=True)

    plain = results.get("(a) plain PyTorch loop, backbone recomputed")
    print("\n| contender | whole run s (median) | s per epoch after the first | test accuracy | (a) / this, "
          "median of rounds | per round |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    for name, runs in results.items():
        whole = statistics.median(r["whole_s"] for r in runs)
        later = statistics.median(s for r in runs for s in r["epoch_s"][1:]) if runs[0]["epoch_s"][1:] else float("nan")
        ratios = [p["whole_s"] / r["whole_s"] for p, r in zip(plain, runs)] if plain else []
        shown = f"{statistics.median(ratios):.1f}x" if ratios else "-"
        note = "" if runs[0].get("cached", True) else " (uncached)"
        print(f"| {name}{note} | {whole:.1f} | {later:.2f} | {runs[0]['accuracy']:.3f} | {shown} | "
              f"{', '.join(f'{r:.1f}x' for r in ratios)} |")
    if "k" in args.rows and "Keras, base_model.trainable = False" not in results:
        print("| Keras, base_model.trainable = False | tensorflow is not installed here (or another shape): not run |"
              " | | | |")
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
