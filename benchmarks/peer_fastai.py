"""fastai's row of benchmarks/peers.py, run by the peers' Python (convlab never imports fastai).

Its recommended recipe as the fastai docs show it: ImageDataLoaders.from_folder with aug_transforms (flip, rotate,
zoom, warp, lighting: all apply at 32 px) and Normalize; from scratch a Learner on fastai's own xresnet18 with
fit_one_cycle; fine-tuning vision_learner on the given MobileNetV2 weights (registered in model_meta like any
arch, so fastai cuts the body, adds its head, normalises with ImageNet stats and splits the learning rates) with
fine_tune (one frozen epoch, then --epochs unfrozen). A callback stops training once --budget-s has passed since the
process started; --epochs comes from a timed calibration run. Prints one JSON line with the seconds it spent.
"""
import time

T0 = time.time()  # the budget counts from the process start, imports included

import argparse  # noqa: E402
import json  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
import torchvision  # noqa: E402
from fastai.callback.core import Callback, CancelFitException  # noqa: E402
from fastai.vision.all import (ImageDataLoaders, Learner, Normalize, Resize, accuracy, aug_transforms,  # noqa: E402
                               default_split, imagenet_stats, model_meta, vision_learner, xresnet18)
from safetensors.torch import load_file  # noqa: E402


class Budget(Callback):
    """Cancel the fit (fastai's own way to stop early) once the wall-time budget is spent; counts epochs."""

    def __init__(self, budget_s: float):
        self.budget_s, self.epochs, self.stopped = budget_s, 0, False

    def after_batch(self):
        # never before one whole epoch: convlab, which cannot stop inside an epoch, also always runs one
        if self.training and self.epochs >= 1 and time.time() - T0 > self.budget_s:
            self.stopped = True
            raise CancelFitException()

    def after_epoch(self):
        self.epochs += 1


def kit_mobilenet_v2(weights: str):
    """A torchvision MobileNetV2 arch that loads the given file instead of downloading, registered for fastai."""
    def arch(pretrained=True):
        model = torchvision.models.mobilenet_v2()
        if pretrained:
            model.load_state_dict(load_file(weights))
        return model
    # cut=-1 keeps `features` as the body (MobileNetV2 pools in forward, so fastai cannot find the cut itself)
    model_meta[arch] = {"cut": -1, "split": default_split, "stats": imagenet_stats}
    return arch


def write_predictions(learn, dls, test: str, workers: int, out_path: str) -> None:
    """fastai's own inference (test_dl + get_preds) on every test image, top-1 class name per line."""
    files = sorted(p for p in Path(test).rglob("*") if p.is_file())
    with learn.no_bar():
        probs, _ = learn.get_preds(dl=dls.test_dl(files, num_workers=workers))
    with open(out_path, "w") as out:
        for path, index in zip(files, probs.argmax(1).tolist()):
            out.write(json.dumps({"path": str(path), "label": str(dls.vocab[index])}) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="folder with train/ and val/")
    parser.add_argument("--test", required=True, help="test folder (one subfolder per class)")
    parser.add_argument("--mode", choices=("scratch", "finetune"), required=True)
    parser.add_argument("--weights", help="MobileNetV2 weights (.safetensors, torchvision keys) for finetune")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--epochs", type=int, required=True)
    parser.add_argument("--budget-s", type=float, default=float("inf"))
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, help="default: fastai's (fit_one_cycle 1e-3, fine_tune 2e-3)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--predictions", help="where to write JSON lines {path, label} (none: a timing run)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    item_tfms = Resize(args.size) if args.size != 32 else None
    dls = ImageDataLoaders.from_folder(args.root, train="train", valid="val", item_tfms=item_tfms, bs=args.batch_size,
                                       batch_tfms=aug_transforms(), num_workers=args.workers, seed=args.seed)
    budget = Budget(args.budget_s)
    started = time.time()
    if args.mode == "scratch":
        dls.add_tfms([Normalize.from_stats(*imagenet_stats)], "after_batch")
        learn = Learner(dls, xresnet18(n_out=dls.c), metrics=accuracy, cbs=[budget])
        with learn.no_bar():
            learn.fit_one_cycle(args.epochs, **({"lr_max": args.lr} if args.lr else {}))
    else:
        learn = vision_learner(dls, kit_mobilenet_v2(args.weights), metrics=accuracy, cbs=[budget])
        with learn.no_bar():
            learn.fine_tune(args.epochs, **({"base_lr": args.lr} if args.lr else {}))
    train_s, epochs_run = time.time() - started, budget.epochs  # get_preds also fires after_epoch

    started = time.time()
    if args.predictions:
        write_predictions(learn, dls, args.test, args.workers, args.predictions)
    print(json.dumps({"epochs_run": epochs_run, "train_s": train_s, "predict_s": time.time() - started,
                      "budget_stopped": budget.stopped}))


if __name__ == "__main__":
    main()
