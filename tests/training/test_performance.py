"""Speed settings: thread choice, memory format, mixed precision: same results, right choices, and each
setting is what the training steps really run with."""
import itertools

import pytest
import torch

from convlab import train
from convlab.errors import ConvlabError
from convlab.models.registry import create_model
from convlab.training import performance
from convlab.training.callbacks import Callback
from convlab.training.performance import (Precision, amp_dtype, auto_threads, busy_cores,
                                           use_channels_last)


@pytest.mark.parametrize("cores, load, expected", [(2, 0.1, 2), (2, 1.2, 1), (2, 8.0, 1), (8, 3.0, 5), (1, 0.0, 1)])
def test_auto_threads_leave_busy_cores_alone(cores, load, expected, monkeypatch):
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert auto_threads(cores, load) == expected


def _stat(user, idle):
    return f"cpu  {user} 0 0 {idle} 0 0 0 0 0 0\ncpu0 {user} 0 0 {idle} 0 0 0 0 0 0\n"


def test_busy_cores_read_from_the_kernel_counters(tmp_path, monkeypatch):
    stat = tmp_path / "stat"
    readings = iter([_stat(1000, 5000), _stat(1150, 5050)])  # 150 busy ticks, 50 idle: 3/4 busy
    real_read = type(stat).read_text
    monkeypatch.setattr(type(stat), "read_text", lambda self, *a, **k: next(readings) if self == stat
                        else real_read(self, *a, **k))
    monkeypatch.setattr("os.cpu_count", lambda: 4)
    assert busy_cores(window=0.0, stat=stat) == pytest.approx(3.0)


def test_busy_cores_unknown_without_the_counters(tmp_path):
    assert busy_cores(window=0.0, stat=tmp_path / "missing") is None
    (tmp_path / "odd").write_text("intr 1 2 3\n")
    assert busy_cores(window=0.0, stat=tmp_path / "odd") is None


def test_auto_threads_split_the_cores_between_torchrun_processes(monkeypatch):
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert auto_threads(8, 0.0) == 4


def test_amp_choices():
    cpu = torch.device("cpu")
    assert amp_dtype("auto", cpu) is None and amp_dtype("off", cpu) is None
    assert amp_dtype("bf16", cpu) == torch.bfloat16
    with pytest.raises(ConvlabError, match="--amp fp16 needs a GPU"):
        amp_dtype("fp16", cpu)
    if torch.cuda.is_available():
        expected = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        assert amp_dtype("auto", torch.device("cuda")) == expected


def test_channels_last_model_computes_the_same_values():
    torch.manual_seed(0)
    model = create_model("small-cnn", 3, 10, (16, 16)).double()
    x = torch.randn(4, 3, 16, 16, dtype=torch.float64)
    expected = model(x)
    assert use_channels_last("auto", model, torch.device("cpu"))
    model = model.to(memory_format=torch.channels_last)
    torch.testing.assert_close(model(x.contiguous(memory_format=torch.channels_last)), expected)
    assert not use_channels_last("off", model, torch.device("cpu"))


def test_bf16_step_trains_and_float32_step_matches_plain_torch():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    reference = torch.nn.Linear(4, 3)
    reference.load_state_dict(model.state_dict())
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    for net, step in ((model, Precision("cpu")), (reference, None)):
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        loss = torch.nn.functional.cross_entropy(net(x), y)
        if step is None:
            opt.zero_grad()
            loss.backward()
            opt.step()
        else:
            with step.autocast():
                loss = torch.nn.functional.cross_entropy(net(x), y)
            step.backward_step(loss, opt)
    torch.testing.assert_close(model.weight, reference.weight)
    bf16 = Precision.for_run("bf16", torch.device("cpu"))
    with bf16.autocast():
        assert model(x).dtype == torch.bfloat16
    assert bf16.scaler is None and bf16.label == "bf16"


class StepRecorder(Callback):
    """Records, at each training step, torch's thread count and the tensors the model takes and gives."""

    def __init__(self):
        self.steps: list[dict] = []
        self.handles = []

    def on_train_begin(self, state):
        model = state.model
        conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))

        def before(module, args):
            if module.training:  # not validation or the test evaluation
                images = args[0]
                self.steps.append({"threads": torch.get_num_threads(), "images": (images.dtype, images.stride()),
                                   "conv_weight": (conv.weight.dtype, conv.weight.stride())})

        def after(module, args, output):
            if module.training:
                self.steps[-1]["logits"] = output.dtype

        self.handles = [model.register_forward_pre_hook(before), model.register_forward_hook(after)]

    def on_train_end(self, state):
        for handle in self.handles:
            handle.remove()


@pytest.fixture
def train_recorded(tmp_path, make_image_folder):
    """train_recorded(**settings) -> (run, steps): 1 epoch of tiny-cnn on 16x16 RGB images, on the CPU."""
    root = make_image_folder(tmp_path / "images", per_class=8)
    runs = itertools.count()

    def run(**settings):
        recorder = StepRecorder()
        run = train(data=f"imagefolder:{root}", model="tiny-cnn", image_size=16, epochs=1, batch_size=4,
                    val_fraction=0.0, device="cpu", quiet=True, out=str(tmp_path / f"run{next(runs)}"),
                    callbacks=[recorder], **settings)
        assert len(recorder.steps) == 5  # 19 training images (24 less the test split) in batches of 4
        return run, recorder.steps

    return run


@pytest.mark.parametrize("threads, deterministic, auto, before, expected", [
    (1, False, 2, 2, 1),  # --threads N is N, whatever torch had
    (2, False, 1, 1, 2),
    (0, False, 2, 1, 2),  # 0: what auto_threads() chooses
    (0, True, 2, 1, 1),  # --deterministic without --threads keeps torch's count
], ids=["1", "2", "auto", "deterministic"])
def test_threads_hold_for_every_training_step(train_recorded, monkeypatch, threads, deterministic, auto, before,
                                              expected):
    """Read inside the steps, not from the config: a setting echoed but never applied must fail."""
    monkeypatch.setattr(performance, "auto_threads", lambda *args: auto)
    torch.set_num_threads(before)  # tests/conftest.py puts torch's own count back afterwards
    _, steps = train_recorded(threads=threads, deterministic=deterministic)
    assert [step["threads"] for step in steps] == [expected] * 5
    assert torch.get_num_threads() == expected  # process-wide, as documented


@pytest.mark.parametrize("setting, nhwc", [("on", True), ("auto", True), ("off", False)])
def test_channels_last_gives_nhwc_batches_and_weights(train_recorded, setting, nhwc):
    """Both the batches and the conv weights: one NHWC without the other would run NCHW kernels."""
    run, steps = train_recorded(channels_last=setting)
    # (N, 3, 16, 16) float32 batches of 4: NHWC strides are (768, 1, 48, 3), NCHW ones (768, 256, 16, 1)
    images = (torch.float32, (768, 1, 48, 3) if nhwc else (768, 256, 16, 1))
    assert {step["images"] for step in steps[:-1]} == {images}  # the last batch has 3 images
    conv = run.model.features[0].weight  # (8, 3, 3, 3)
    weight = (torch.float32, (27, 1, 9, 3) if nhwc else (27, 9, 3, 1))
    assert {step["conv_weight"] for step in steps} == {weight} and (conv.dtype, conv.stride()) == weight


def test_amp_bf16_computes_in_bfloat16_and_off_in_float32(train_recorded):
    """Autocast's dtype shows in the logits; the weights stay float32 (master weights) in both."""
    full, full_steps = train_recorded(amp="off")
    mixed, mixed_steps = train_recorded(amp="bf16")
    assert {step["logits"] for step in full_steps} == {torch.float32}
    assert {step["logits"] for step in mixed_steps} == {torch.bfloat16}
    assert {step["conv_weight"][0] for step in full_steps + mixed_steps} == {torch.float32}
    for run in (full, mixed):
        assert {w.dtype for w in run.model.state_dict().values() if w.is_floating_point()} == {torch.float32}
    # the same seed and data: only bf16's rounding makes the trained values differ
    assert not torch.equal(full.model.features[0].weight, mixed.model.features[0].weight)
