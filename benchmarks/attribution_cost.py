"""Seconds per image of each attribution method on a model of a given size, for choosing what to serve.

    python benchmarks/attribution_cost.py [--model resnet18] [--size 224] [--classes 10] [--repeats 3]
        [--method gradcam,ig,...] [--samples 200] [--steps 32]

--model is a convlab preset or any torchvision classification model, with random weights (the cost does
not depend on them). One image of --size x --size; each method runs once to warm up, then --repeats
times; the table gives the median. The web app's overlay (POST /api/attribute) costs about this plus
decoding and drawing.
"""
from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--method", default="gradcam,saliency,lrp,ig,smoothgrad,occlusion,lime,kernelshap")
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--steps", type=int, default=32)
    args = parser.parse_args()

    from convlab.insight.attribution import METHODS, Settings, parse_methods
    from convlab.models.registry import create_model

    torch.manual_seed(0)
    model = create_model(args.model, 3, args.classes, (args.size, args.size)).eval()
    x, target = torch.randn(1, 3, args.size, args.size), torch.tensor([0])
    settings = Settings(samples=args.samples, steps=args.steps)
    print(f"{args.model} at {args.size}x{args.size}, 1 image, {torch.get_num_threads()} torch threads, "
          f"samples={args.samples} steps={args.steps}, median of {args.repeats}\n")
    print("| method | s per image |\n| --- | ---: |")
    warnings.simplefilter("ignore")  # captum's notes about requires_grad and ReLU hooks
    for name in parse_methods(args.method):
        method = METHODS[name](settings)
        method.attribute(model, x, target)
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            method.attribute(model, x, target)
            times.append(time.perf_counter() - start)
        print(f"| {name} | {statistics.median(times):.2f} |", flush=True)


if __name__ == "__main__":
    main()
