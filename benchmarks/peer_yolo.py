"""Ultralytics' side jobs for benchmarks/peers.py, run by the peers' Python (training itself is `yolo classify train`).

stage-weights: put the given MobileNetV2 weights where torchvision's DEFAULT weights are looked up
($TORCH_HOME/hub/checkpoints/<file name of the DEFAULT url>), so Ultralytics' TorchVision backbone module loads them
offline instead of downloading its own copy.
predict: classify the test folder with the trained best.pt through YOLO's own predictor and write JSON lines
{path, label} for the benchmark's shared scoring; prints one JSON line with the seconds it spent.
"""
import argparse
import json
import time
from pathlib import Path


def stage_weights(weights: str, torch_home: str) -> None:
    """Save the file's state dict under the name torchvision's DEFAULT MobileNetV2 weights are cached as."""
    import torch
    import torchvision
    from safetensors.torch import load_file

    default = torchvision.models.get_model_weights("mobilenet_v2").DEFAULT
    target = Path(torch_home) / "hub" / "checkpoints" / Path(default.url).name
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save(load_file(weights), target)
    print(json.dumps({"staged": str(target)}))


def predict(best: str, test: str, imgsz: int, out_path: str) -> None:
    """YOLO's predictor on every test image, in chunks (a list source), top-1 class name per image."""
    from ultralytics import YOLO

    started = time.time()
    model = YOLO(best, task="classify")
    files = sorted(str(p) for p in Path(test).rglob("*") if p.is_file())
    with open(out_path, "w") as out:
        for i in range(0, len(files), 256):
            chunk = files[i:i + 256]
            for path, result in zip(chunk, model.predict(chunk, imgsz=imgsz, device="cpu", verbose=False)):
                out.write(json.dumps({"path": path, "label": result.names[result.probs.top1]}) + "\n")
    print(json.dumps({"predict_s": time.time() - started}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    stage = sub.add_parser("stage-weights")
    stage.add_argument("weights")
    stage.add_argument("torch_home")
    pred = sub.add_parser("predict")
    pred.add_argument("best")
    pred.add_argument("test")
    pred.add_argument("imgsz", type=int)
    pred.add_argument("out")
    args = parser.parse_args()
    if args.command == "stage-weights":
        stage_weights(args.weights, args.torch_home)
    else:
        predict(args.best, args.test, args.imgsz, args.out)


if __name__ == "__main__":
    main()
