"""timm's row of benchmarks/peers.py: a timm model with timm's recommended augmentation in a plain PyTorch loop.

Run by the peers' Python (convlab never imports timm). The recipe is the one timm's docs and train.py give for
ImageNet-style training, scaled to the image size: create_transform(..., auto_augment='rand-m9-mstd0.5',
re_prob=0.25) (random-resized crop, flip, RandAugment, random erasing), Mixup/CutMix (0.8/1.0) with label smoothing
0.1 and SoftTargetCrossEntropy, AdamW (weight decay 0.05) and a per-step cosine schedule with 5% warm-up. From
scratch: timm.create_model(--model); fine-tuning: torchvision's MobileNetV2 with the given weights and a new
classifier, trained whole by the same loop. The loop stops once --budget-s has passed since the process started;
--epochs comes from a timed calibration run. Prints one JSON line with the seconds it spent.
"""
import time

T0 = time.time()  # the budget counts from the process start, imports included

import argparse  # noqa: E402
import json  # noqa: E402
from pathlib import Path  # noqa: E402

import timm  # noqa: E402
import torch  # noqa: E402
import torchvision  # noqa: E402
from PIL import Image  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from timm.data import Mixup, create_transform  # noqa: E402
from timm.loss import SoftTargetCrossEntropy  # noqa: E402
from timm.optim import create_optimizer_v2  # noqa: E402
from timm.scheduler import CosineLRScheduler  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402


def build_model(mode: str, name: str, weights: str | None, classes: int) -> torch.nn.Module:
    """scratch: timm's model by name; finetune: torchvision MobileNetV2 with the file's weights, a new classifier."""
    if mode == "scratch":
        return timm.create_model(name, pretrained=False, num_classes=classes)
    model = torchvision.models.mobilenet_v2()
    model.load_state_dict(load_file(weights))
    model.classifier[1] = torch.nn.Linear(model.classifier[1].in_features, classes)
    return model


def accuracy(model: torch.nn.Module, loader: DataLoader) -> float:
    """Top-1 on a held-out loader (the per-epoch validation every other tool also prints)."""
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for x, y in loader:
            correct += (model(x).argmax(1) == y).sum().item()
            total += len(y)
    return correct / max(total, 1)


def train(model, loader, val_loader, epochs: int, lr: float, budget_s: float, classes: int) -> tuple[int, bool]:
    """The plain loop: mixup on each batch, AdamW, cosine per step; returns (epochs run, stopped by the budget)."""
    mixup = Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=0.1, num_classes=classes)
    loss_fn = SoftTargetCrossEntropy()
    optimizer = create_optimizer_v2(model, opt="adamw", lr=lr, weight_decay=0.05)
    total = epochs * len(loader)
    scheduler = CosineLRScheduler(optimizer, t_initial=total, warmup_t=max(1, total // 20), warmup_lr_init=lr / 100,
                                  t_in_epochs=False)
    step = 0
    for epoch in range(epochs):
        model.train()
        for x, y in loader:
            if epoch >= 1 and time.time() - T0 > budget_s:  # one whole epoch at least, as convlab always runs
                return epoch, True
            x, y = mixup(x, y)
            optimizer.zero_grad()
            loss_fn(model(x), y).backward()
            optimizer.step()
            step += 1
            scheduler.step_update(num_updates=step)
        print(f"epoch {epoch + 1}/{epochs} val_acc {accuracy(model, val_loader):.4f} "
              f"elapsed {time.time() - T0:.1f}s", flush=True)
    return epochs, False


def write_predictions(model, eval_tf, classes: list[str], test: str, out_path: str) -> None:
    """The model on every test image through timm's eval transform, top-1 class name per line."""
    files = sorted(p for p in Path(test).rglob("*") if p.is_file())
    model.eval()
    with open(out_path, "w") as out, torch.no_grad():
        for i in range(0, len(files), 256):
            chunk = files[i:i + 256]
            x = torch.stack([eval_tf(Image.open(p).convert("RGB")) for p in chunk])
            for path, index in zip(chunk, model(x).argmax(1).tolist()):
                out.write(json.dumps({"path": str(path), "label": classes[index]}) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="folder with train/ and val/")
    parser.add_argument("--test", required=True, help="test folder (one subfolder per class)")
    parser.add_argument("--mode", choices=("scratch", "finetune"), required=True)
    parser.add_argument("--model", default="resnet18", help="timm model name for scratch")
    parser.add_argument("--weights", help="MobileNetV2 weights (.safetensors, torchvision keys) for finetune")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--epochs", type=int, required=True)
    parser.add_argument("--budget-s", type=float, default=float("inf"))
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--predictions", help="where to write JSON lines {path, label} (none: a timing run)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    train_tf = create_transform(args.size, is_training=True, auto_augment="rand-m9-mstd0.5", re_prob=0.25)
    eval_tf = create_transform(args.size, is_training=False)
    train_set = torchvision.datasets.ImageFolder(Path(args.root) / "train", train_tf)
    val_set = torchvision.datasets.ImageFolder(Path(args.root) / "val", eval_tf)
    # mixup pairs the batch with its reverse, so every batch must be even: drop the ragged last one
    loader = DataLoader(train_set, args.batch_size, shuffle=True, num_workers=args.workers,
                        drop_last=len(train_set) > args.batch_size)
    val_loader = DataLoader(val_set, 256, num_workers=args.workers)
    classes = len(train_set.classes)
    model = build_model(args.mode, args.model, args.weights, classes)

    started = time.time()
    epochs_run, stopped = train(model, loader, val_loader, args.epochs, args.lr, args.budget_s, classes)
    train_s = time.time() - started

    started = time.time()
    if args.predictions:
        write_predictions(model, eval_tf, train_set.classes, args.test, args.predictions)
    print(json.dumps({"epochs_run": epochs_run, "train_s": train_s, "predict_s": time.time() - started,
                      "budget_stopped": stopped}))


if __name__ == "__main__":
    main()
