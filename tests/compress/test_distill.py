"""Distillation: the loss against a float64 reference, and the student's KL to the teacher falls."""
import json

import pytest
import torch
import torch.nn.functional as F
import yaml

from convlab import ConvlabError, load_run
from convlab.compress.distill import DistillationLoss, distill, distillation_loss


def reference_loss(student, teacher, labels, temperature, alpha):
    """alpha * T^2 * sum p_t (log p_t - log p_s) / N + (1 - alpha) * CE, written out in float64."""
    s, t = student.double(), teacher.double()
    p_t = torch.softmax(t / temperature, 1)
    log_p_s = torch.log_softmax(s / temperature, 1)
    kl = (p_t * (torch.log(p_t) - log_p_s)).sum(1).mean()
    ce = -torch.log_softmax(s, 1)[torch.arange(len(labels)), labels].mean()
    return alpha * temperature ** 2 * kl + (1 - alpha) * ce


@pytest.mark.parametrize("temperature, alpha", [(1.0, 0.5), (4.0, 0.7), (2.0, 0.0), (3.0, 1.0)])
def test_distillation_loss_matches_the_reference(temperature, alpha):
    generator = torch.Generator().manual_seed(0)
    student = torch.randn(6, 5, generator=generator, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(6, 5, generator=generator, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 3, 4, 0])
    got = distillation_loss(student, teacher, labels, temperature, alpha)
    want = reference_loss(student, teacher, labels, temperature, alpha)
    assert got.item() == pytest.approx(want.item(), rel=1e-12)
    (grad_got,) = torch.autograd.grad(got, student)
    (grad_want,) = torch.autograd.grad(want, student)
    torch.testing.assert_close(grad_got, grad_want)


def test_the_loss_feeds_the_teacher_the_student_batch_and_validates_with_cross_entropy():
    teacher, student = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    # inputs normalized for the student: x_s; the teacher expects x_t = 2 x_s + 1
    loss_fn = DistillationLoss(teacher, student, 2.0, 0.5, 0.0, torch.tensor(2.0), torch.tensor(1.0))
    x, labels = torch.randn(8, 4), torch.randint(0, 3, (8,))
    logits = student(x)
    want = distillation_loss(logits, teacher(2 * x + 1), labels, 2.0, 0.5)
    assert loss_fn(logits, labels).item() == pytest.approx(want.item(), rel=1e-6)
    student.eval()
    logits = student(x)
    assert loss_fn(logits, labels).item() == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-6)
    kl = loss_fn.epoch_kl()
    assert kl["train"] > 0 and kl["val"] > 0


@pytest.mark.slow
def test_student_kl_to_the_teacher_falls(digits_run, tmp_path):
    run = distill(digits_run.path, student="tiny-cnn", epochs=4, seed=1, out=str(tmp_path / "student"),
                  quiet=True, latency_seconds=0.01)
    record = run.metrics["distillation"]
    kl = record["kl_to_teacher"]
    assert len(kl) == 4 and record["kl_measured_on"] == "validation split, T=1"
    assert kl[-1] < kl[0] / 2
    assert record["train_kl"][-1] < record["train_kl"][0]
    saved = json.loads((run.path / "metrics.json").read_text())
    assert saved["distillation"]["kl_to_teacher"] == kl and "size_mb" in saved
    provenance = yaml.safe_load((run.path / "config.yaml").read_text())["provenance"]
    assert provenance == {"variant": "distilled", "teacher": str(digits_run.path), "teacher_model": "tiny-cnn",
                          "temperature": 4.0, "alpha": 0.7}
    assert load_run(run.path).config.data.name == "digits"  # the teacher's data by default


def test_distill_refuses_data_whose_classes_the_teacher_does_not_know(digits_run, tmp_path, make_image_folder):
    root = make_image_folder(tmp_path / "imgs", per_class=4, size=(8, 8), mode="L")
    with pytest.raises(ConvlabError, match="--teacher .* knows the classes"):
        distill(digits_run.path, student="tiny-cnn", data=f"imagefolder:{root}", epochs=1,
                out=str(tmp_path / "s"), quiet=True)


@pytest.mark.parametrize("kwargs, message", [({"temperature": 0}, "--temperature must be > 0"),
                                             ({"alpha": 1.5}, r"--alpha must be in \[0, 1\]")])
def test_distill_checks_its_settings(digits_run, kwargs, message):
    with pytest.raises(ConvlabError, match=message):
        distill(digits_run.path, student="tiny-cnn", **kwargs)
