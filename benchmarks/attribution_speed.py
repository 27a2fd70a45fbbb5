"""Occlusion, LIME and KernelSHAP batched as convlab runs them, against captum called with its defaults.

    python benchmarks/attribution_speed.py [RUN_DIR] [--images 8] [--repeats 5] [--threads 1] [--batch 64]

The baseline is captum's default use: one image per call and one perturbation per forward pass
(perturbations_per_eval=1). convlab passes the images together: occlusion calls the same captum class
packing about --batch windows into each forward pass (the tests check it gives the same maps); lime and
kernelshap draw all perturbations of all images at once and evaluate them --batch at a time
(insight/attribution/surrogate.py; the tests check they give captum's maps for the same masks). A row
also gives the baseline captum's default LIME kernel (convlab's lime weighs samples by lime_image's
on/off kernel, which is cheaper; the maps differ a little). The two paths are timed alternately
(baseline, candidate, baseline, ...) so that a change in the machine's load hits both; the table gives
medians and the ratio. Without RUN_DIR: mnist-cnn with random weights on 28x28 inputs.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch


def _captum_default_lime():
    """convlab's lime with captum's own similarity kernel (exp of the cosine distance between whole images)."""
    from captum.attr import Lime

    from convlab.insight.attribution import METHODS

    class CaptumDefaultLime(METHODS["lime"]):
        def explainer(self, model):
            return Lime(model)

    return CaptumDefaultLime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", metavar="RUN_DIR", nargs="?", help="a run folder (default: mnist-cnn, random)")
    parser.add_argument("--images", type=int, default=8, help="images attributed per call (default: 8)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls of each path (default: 5)")
    parser.add_argument("--samples", type=int, default=200,
                        help="LIME's and KernelSHAP's perturbed inputs per image (default: 200)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    parser.add_argument("--batch", type=int, default=None, help="images per forward pass (default: convlab's)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from threadpoolctl import threadpool_limits

    threadpool_limits(args.threads, user_api="blas")  # the surrogates' sklearn fits: both paths alike

    from convlab.insight.attribution import METHODS, Settings
    from convlab.insight.attribution.registry import library_notes_hidden
    from convlab.models.registry import create_model

    if args.run_dir:
        from convlab.run import load_run

        run = load_run(args.run_dir)
        model, name = run.model.eval(), f"{run.path.name} ({run.config.model.name})"
        images = torch.from_numpy(run.test_data().images[:args.images])
        inputs = run.preprocess.norm.apply(images)
    else:
        torch.manual_seed(0)
        model, name = create_model("mnist-cnn", 1, 10, (28, 28)).eval(), "mnist-cnn, random weights"
        inputs = torch.randn(args.images, 1, 28, 28)
    with torch.no_grad():
        target = model(inputs).argmax(1)
    CaptumDefaultLime = _captum_default_lime()  # noqa: N806
    print(f"{name}: {len(inputs)} images of {tuple(inputs.shape[1:])}, {torch.get_num_threads()} threads "
          f"(torch and BLAS), load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    print("\n| method | captum default (1 image per call, 1 perturbation per forward) s/image | batched s/image "
          "| speed-up |")
    print("| --- | ---: | ---: | ---: |")
    settings = Settings(samples=args.samples, **({} if args.batch is None else {"batch": args.batch}))
    rows = [("occlusion", "occlusion", METHODS["occlusion"]), ("lime", "lime", METHODS["lime"]),
            ("lime", "lime, baseline also with captum's default kernel", CaptumDefaultLime),
            ("kernelshap", "kernelshap", METHODS["kernelshap"])]
    for method_name, label, baseline_class in rows:
        batched = METHODS[method_name](settings)
        single = baseline_class(settings)
        single.batched = False
        timings = {"single": [], "batched": []}
        with library_notes_hidden():
            batched.attribute(model, inputs[:1], target[:1])  # warm-up
            for _ in range(args.repeats):
                start = time.perf_counter()
                for i in range(len(inputs)):  # captum's default use: one image per call
                    single.attribute(model, inputs[i:i + 1], target[i:i + 1])
                timings["single"].append((time.perf_counter() - start) / len(inputs))
                start = time.perf_counter()
                batched.attribute(model, inputs, target)
                timings["batched"].append((time.perf_counter() - start) / len(inputs))
        slow, fast = statistics.median(timings["single"]), statistics.median(timings["batched"])
        print(f"| {label} | {slow:.3f} | {fast:.3f} | {slow / fast:.1f}x |")


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
