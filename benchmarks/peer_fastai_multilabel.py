"""fastai's multi-label baseline on COCO128 (the CSVs of benchmarks/coco128_multilabel.py), in a fastai virtualenv.

fastai's own idiom (the PASCAL multi-label tutorial): a DataBlock(ImageBlock, MultiCategoryBlock) read from the
CSVs with ColReader (label_delim=' '), ColSplitter on the val CSV's rows, Resize(224, squish) and aug_transforms();
vision_learner on torchvision's MobileNetV2 with the given ImageNet weights (registered in model_meta as
benchmarks/peer_fastai.py does: cut=-1 keeps `features`, fastai adds its head and splits the learning rates), its
defaults for a MultiCategoryBlock (BCEWithLogitsLossFlat, accuracy_multi at 0.5), fine_tune(EPOCHS, base_lr): one
frozen epoch, then EPOCHS unfrozen. The val images are fastai's valid set, for reporting only. Then mean AP over the
classes with a positive among the val images (sklearn, macro) and micro-F1 at 0.5. Prints one JSON line.

    python benchmarks/peer_fastai_multilabel.py --coco128 DATA/coco128 --csv-dir OUT \
        --weights mobilenet_v2_imagenet.safetensors --epochs 10 [--lr 1e-2]
"""
import time

T0 = time.time()

import argparse  # noqa: E402
import json  # noqa: E402
from pathlib import Path  # noqa: E402

import pandas as pd  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from fastai.callback.core import Callback  # noqa: E402
from fastai.vision.all import (ColReader, ColSplitter, DataBlock, ImageBlock, MultiCategoryBlock,  # noqa: E402
                               Resize, ResizeMethod, accuracy_multi, aug_transforms, set_seed, vision_learner)
from peer_fastai import kit_mobilenet_v2  # noqa: E402  (the same registration as the single-label row)
from sklearn.metrics import average_precision_score, f1_score  # noqa: E402


class EpochTimes(Callback):
    """Wall seconds of each epoch (training plus fastai's validation pass)."""
    order = 100

    def before_fit(self):
        if not hasattr(self, "seconds"):
            self.seconds = []

    def before_epoch(self):
        self.start = time.time()

    def after_epoch(self):
        self.seconds.append(round(time.time() - self.start, 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--coco128", type=Path, required=True, help="the kit's coco128 folder (CSV paths are "
                        "relative to it; data.yaml gives the 80 names)")
    parser.add_argument("--csv-dir", type=Path, required=True, help="folder with train.csv and val.csv")
    parser.add_argument("--weights", required=True, help="MobileNetV2 ImageNet weights (.safetensors)")
    parser.add_argument("--epochs", type=int, default=10, help="fine_tune's unfrozen epochs (plus one frozen)")
    parser.add_argument("--lr", type=float, default=2e-3, help="fine_tune's base_lr (fastai's default 2e-3)")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    set_seed(args.seed)

    train, val = (pd.read_csv(args.csv_dir / f"{s}.csv") for s in ("train", "val"))
    df = pd.concat([train.assign(is_valid=False), val.assign(is_valid=True)], ignore_index=True)
    names = yaml.safe_load((args.coco128 / "data.yaml").read_text())["names"]
    vocab = sorted(n.replace(" ", "_") for n in (names.values() if isinstance(names, dict) else names))
    block = DataBlock(blocks=(ImageBlock, MultiCategoryBlock(vocab=vocab)), splitter=ColSplitter("is_valid"),
                      get_x=ColReader("path", pref=f"{args.coco128.resolve()}/"),
                      get_y=ColReader("labels", label_delim=" "),
                      item_tfms=Resize(args.size, method=ResizeMethod.Squish), batch_tfms=aug_transforms())
    dls = block.dataloaders(df, bs=args.batch_size, num_workers=0, seed=args.seed)

    times = EpochTimes()
    learn = vision_learner(dls, kit_mobilenet_v2(args.weights), metrics=accuracy_multi, cbs=[times])
    started = time.time()
    with learn.no_bar():
        learn.fine_tune(args.epochs, base_lr=args.lr)
    train_s = time.time() - started
    epoch_s = list(times.seconds)

    with learn.no_bar():
        probs, targets = learn.get_preds(dl=dls.valid)  # sigmoid applied (the loss's activation)
    probs, targets = probs.numpy(), targets.numpy().astype(int)
    present = targets.sum(0) > 0
    result = {
        "epochs": args.epochs, "epochs_total": args.epochs + 1, "lr": args.lr, "loss": type(learn.loss_func).__name__,
        "seconds": round(train_s, 1), "wall_s": round(time.time() - T0, 1), "epoch_s": epoch_s,
        "map": float(average_precision_score(targets[:, present], probs[:, present], average="macro")),
        "micro_f1": float(f1_score(targets, probs > 0.5, average="micro", zero_division=0)),
        "classes_scored": int(present.sum()), "val_images": int(len(targets)), "train_images": int(len(train)),
        # the last epoch: valid loss, accuracy_multi
        "last_valid_loss_acc": [float(v) for v in learn.recorder.values[-1]],
        "mean_positives_predicted": float((probs > 0.5).sum(1).mean()),
        "seed": args.seed, "threads": args.threads, "batch_size": args.batch_size, "size": args.size,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
