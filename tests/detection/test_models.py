"""Detectors by name: built for the data's classes, 0-based labels in and out, weight files, classification
backbones, fine-tuning groups, and the tiny preset learning on generated shapes."""
from __future__ import annotations

import pytest
import torch

from convlab.config import Config
from convlab.detection.models import DETECTORS, Detector, build_detector, find_detector, list_detectors
from convlab.detection.synthetic import make_shapes
from convlab.errors import ConvlabError
from convlab.models.freeze import HEAD
from convlab.models.weights import save_safetensors
from convlab.training.freezing import FreezePlan

ISSUE_DETECTORS = {"ssdlite320_mobilenet_v3_large", "fasterrcnn_mobilenet_v3_large_320_fpn",
                   "fasterrcnn_mobilenet_v3_large_fpn", "fasterrcnn_resnet50_fpn", "fasterrcnn_resnet50_fpn_v2",
                   "retinanet_resnet50_fpn", "retinanet_resnet50_fpn_v2", "fcos_resnet50_fpn", "tiny-detector"}
LARGE = {name for name in DETECTORS if "resnet50" in name}


@pytest.fixture(autouse=True)
def _one_thread():
    """Small tensors: one thread is several times faster than two on a busy CPU (conftest restores the count)."""
    torch.set_num_threads(1)


def class_scores(detector: Detector) -> int:
    """How many class scores the detector's head gives per box (background included where it has one)."""
    model = detector.model
    if hasattr(model, "roi_heads"):
        return model.roi_heads.box_predictor.cls_score.out_features
    head = model.head.classification_head
    return head.num_columns if hasattr(head, "num_columns") else head.num_classes


def one_step_losses(detector: Detector, size: int = 96) -> dict:
    images = [torch.rand(3, size, size), torch.rand(3, size - 16, size)]
    targets = [{"boxes": torch.tensor([[8.0, 10.0, 40.0, 50.0]]), "labels": torch.tensor([2])},
               {"boxes": torch.zeros((0, 4)), "labels": torch.zeros(0, dtype=torch.int64)}]  # a negative image
    detector.train()
    return detector(images, targets)


def test_the_registry_holds_the_issue_detectors():
    assert ISSUE_DETECTORS <= {entry.name for entry in list_detectors()}


def test_an_unknown_detector_gets_suggestions():
    with pytest.raises(ConvlabError, match="unknown detector 'fasterrcnn_mobilenet'.*Did you mean "
                                           "fasterrcnn_mobilenet_v3_large_fpn"):
        find_detector("fasterrcnn_mobilenet")


@pytest.mark.parametrize("name", [pytest.param(name, marks=pytest.mark.slow) if name in LARGE else name
                                  for name in DETECTORS])
def test_each_detector_builds_for_three_classes(name):
    torch.manual_seed(0)
    detector = build_detector(name, 3, 96)
    assert class_scores(detector) == 3 + detector.shift
    assert detector.shift == (1 if name.startswith(("fasterrcnn", "ssd")) else 0)
    losses = one_step_losses(detector)
    assert losses and all(torch.isfinite(v) for v in losses.values())
    detector.eval()
    with torch.no_grad():
        found = detector([torch.rand(3, 96, 80)])
    assert set(found[0]) == {"boxes", "labels", "scores"} and found[0]["boxes"].shape[1:] == (4,)
    assert all(0 <= label < 3 for label in found[0]["labels"].tolist())


class Spy(torch.nn.Module):
    """Stands in for the torchvision model: records the targets, answers with fixed labels."""

    def forward(self, images, targets=None):
        self.seen = targets
        if self.training:
            return {"loss": torch.zeros(())}
        return [{"boxes": torch.zeros(2, 4), "labels": torch.tensor([1, 3]), "scores": torch.ones(2)}]


@pytest.mark.parametrize("name, shift", [("fasterrcnn_mobilenet_v3_large_320_fpn", 1), ("tiny-detector", 0)])
def test_labels_are_zero_based_outside_and_shifted_inside(name, shift):
    detector = build_detector(name, 3, 64)
    detector.model = Spy()
    detector.train()
    detector([torch.rand(3, 64, 64)], [{"boxes": torch.tensor([[1.0, 1, 9, 9]]), "labels": torch.tensor([0])}])
    assert detector.model.seen[0]["labels"].tolist() == [0 + shift]
    detector.eval()
    assert detector([torch.rand(3, 64, 64)])[0]["labels"].tolist() == [1 - shift, 3 - shift]


@pytest.mark.parametrize("name", ["fasterrcnn_mobilenet_v3_large_320_fpn", "ssdlite320_mobilenet_v3_large"])
@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_coco_weights_file_loads_before_the_class_layers_are_rebuilt(tmp_path, name, suffix):
    import torchvision

    torch.manual_seed(1)
    coco = torchvision.models.get_model(name, weights=None, weights_backbone=None, num_classes=91)
    path = tmp_path / f"coco{suffix}"
    state = {k: v for k, v in coco.state_dict().items() if not k.endswith("num_batches_tracked")}  # as frozen BN
    save_safetensors(state, path) if suffix == ".safetensors" else torch.save(state, path)
    detector = build_detector(name, 3, 96, weights=str(path))
    assert class_scores(detector) == 4
    loaded = detector.model.state_dict()
    rebuilt = {k for k in state if loaded[k].shape != state[k].shape}
    assert rebuilt and all("box_predictor" in k or "classification_head" in k for k in rebuilt)
    assert all(torch.equal(loaded[k], v) for k, v in state.items() if k not in rebuilt)


def test_a_detectors_own_weights_file_round_trips(tmp_path):
    torch.manual_seed(2)
    trained = build_detector("tiny-detector", 3, 64)
    save_safetensors(trained.state_dict(), tmp_path / "model.safetensors")  # keys under model., as a run saves
    again = build_detector("tiny-detector", 3, 64, weights=str(tmp_path / "model.safetensors"))
    assert all(torch.equal(a, b) for a, b in zip(trained.state_dict().values(), again.state_dict().values()))


def test_a_weights_file_of_another_architecture_is_refused_in_one_line(tmp_path):
    save_safetensors(build_detector("tiny-detector", 3, 64).model.state_dict(), tmp_path / "tiny.safetensors")
    with pytest.raises(ConvlabError) as err:
        build_detector("fasterrcnn_mobilenet_v3_large_320_fpn", 3, 64, weights=str(tmp_path / "tiny.safetensors"))
    message = str(err.value)
    assert "\n" not in message and str(tmp_path / "tiny.safetensors") in message
    assert "does not fit fasterrcnn_mobilenet_v3_large_320_fpn" in message and "missing" in message


def test_reset_classes_rebuilds_only_the_class_layer():
    detector = build_detector("tiny-detector", 3, 64)
    before = {k: v.clone() for k, v in detector.state_dict().items()}
    detector.reset_classes(5)
    assert class_scores(detector) == 5 and detector.num_classes == 5
    changed = {k for k, v in detector.state_dict().items() if k not in before or not torch.equal(before[k], v)}
    assert changed == {"model.head.classification_head.cls_logits.weight",
                       "model.head.classification_head.cls_logits.bias"}


def test_a_torchvision_classifier_with_its_weights_file_becomes_a_backbone(tmp_path):
    import torchvision

    torch.manual_seed(3)
    classifier = torchvision.models.resnet18()
    save_safetensors(classifier.state_dict(), tmp_path / "imagenet.safetensors")
    detector = build_detector("ignored", 3, 96, backbone="torchvision:resnet18",
                              backbone_weights=str(tmp_path / "imagenet.safetensors"))
    assert detector.backbone_spec == "torchvision:resnet18" and detector.shift == 1
    body = detector.model.backbone.body.state_dict()
    assert all(torch.equal(v, classifier.state_dict()[k]) for k, v in body.items())
    assert {k.split(".")[0] for k in body} == {"conv1", "bn1", "layer1", "layer2", "layer3", "layer4"}
    assert all(torch.isfinite(v) for v in one_step_losses(detector).values())
    # The spec alone rebuilds the architecture (what loading a detection run does), the state then fits.
    build_detector("ignored", 3, 96, backbone=detector.backbone_spec).load_state_dict(detector.state_dict())


def test_a_backbone_weights_file_that_does_not_fit_names_the_file(tmp_path):
    import torchvision

    save_safetensors(torchvision.models.resnet18().state_dict(), tmp_path / "resnet18.safetensors")
    with pytest.raises(ConvlabError, match=r"--weights .*resnet18.safetensors does not fit torchvision:resnet34"):
        build_detector("ignored", 2, 96, backbone="torchvision:resnet34",
                       backbone_weights=str(tmp_path / "resnet18.safetensors"))


@pytest.mark.parametrize("spec, message", [
    ("runs/missing", "--backbone runs/missing: no such run folder"),
    ("torchvision:resnet_18", "--backbone torchvision:resnet_18: torchvision has no classifier 'resnet_18'"),
    ("model:mnist-cnn@1x28", "--backbone model:mnist-cnn@1x28: write model:NAME@CxHxW"),
])
def test_a_backbone_convlab_cannot_find_is_refused_by_name(spec, message):
    with pytest.raises(ConvlabError, match=message):
        build_detector("ignored", 2, 64, backbone=spec)


def test_a_classification_run_becomes_a_backbone(digits_run):
    detector = build_detector("ignored", 3, 64, backbone=str(digits_run.path))
    size = digits_run.preprocess.size
    assert detector.backbone_spec == f"model:{digits_run.config.model.name}@1x{size[0]}x{size[1]}"
    features = digits_run.model.features.state_dict()
    assert all(torch.equal(v, features[k]) for k, v in detector.model.backbone.body.state_dict().items())
    assert detector.model.backbone.mean.flatten().tolist() == pytest.approx(digits_run.preprocess.mean)
    assert all(torch.isfinite(v) for v in one_step_losses(detector, 64).values())  # RGB in, gray inside
    rebuilt = build_detector("ignored", 3, 64, backbone=detector.backbone_spec)
    rebuilt.load_state_dict(detector.state_dict())  # the run's normalization travels in the state dict
    assert torch.equal(rebuilt.model.backbone.std, detector.model.backbone.std)


def _plan(detector, **finetune) -> FreezePlan:
    conf = Config()
    conf.train.epochs = 3
    for key, value in finetune.items():
        setattr(conf.finetune, key, value)
    return FreezePlan.of(detector, conf)


def test_freeze_backbone_holds_the_feature_extractor_and_trains_the_rest():
    torch.manual_seed(4)
    detector = build_detector("fasterrcnn_mobilenet_v3_large_320_fpn", 3, 96)
    plan = _plan(detector, freeze="backbone", strategy="full")
    assert plan.groups[-1].name == HEAD
    assert plan.groups[-1].modules == ["model.backbone.fpn", "model.rpn", "model.roi_heads"]
    assert plan.frozen == {n for n, _ in detector.named_parameters() if n.startswith("model.backbone.body.")}
    plan.apply_first_stage()
    before = {n: p.detach().clone() for n, p in detector.named_parameters()}
    optimizer = torch.optim.SGD(plan.optimizer_groups(), lr=0.1)
    sum(one_step_losses(detector).values()).backward()
    optimizer.step()
    moved = {n for n, p in detector.named_parameters() if not torch.equal(before[n], p)}
    assert {n.split(".")[2] for n in moved if n.startswith("model.backbone.")} == {"fpn"}
    assert {n.split(".")[1] for n in moved} == {"backbone", "rpn", "roi_heads"}
    assert all(not p.requires_grad for n, p in detector.named_parameters() if n.startswith("model.backbone.body."))


def test_two_stage_trains_the_heads_first_then_the_backbone():
    plan = _plan(build_detector("tiny-detector", 3, 64), strategy="two-stage", head_epochs=1)
    names = [g.name for g in plan.groups]
    assert names == ["stem", "stage1", "stage2", "stage3", HEAD]
    assert [stage.trainable for stage in plan.stages] == [[HEAD], names]
    assert plan.groups[0].params[0].startswith("model.backbone.body.conv1.")


def test_the_tiny_preset_learns_shapes_in_a_few_steps(tmp_path):
    from convlab.detection.batches import DetectionLoader

    torch.manual_seed(0)
    shapes = make_shapes(tmp_path, n_train=32, n_test=0, seed=1)
    loader = DetectionLoader(shapes.train, 8, "cpu", shuffle=True, generator=torch.Generator().manual_seed(0))
    detector = build_detector("tiny-detector", len(shapes.classes), 64)
    optimizer = torch.optim.Adam(detector.parameters(), lr=5e-3)
    losses = []
    for _ in range(5):
        for images, targets in loader:
            loss = sum(detector(images, targets).values())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    assert sum(losses[-4:]) / 4 < 0.75 * sum(losses[:4]) / 4
