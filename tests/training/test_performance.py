"""Speed settings: thread choice, memory format, mixed precision: same results, right choices."""
import pytest
import torch

from convlab import train
from convlab.errors import ConvlabError
from convlab.models.registry import create_model
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


def test_speed_flags_reach_a_run(tmp_path):
    run = train(data="digits", model="tiny-cnn", epochs=1, threads=1, channels_last="off", amp="bf16",
                out=str(tmp_path / "run"), quiet=True)
    assert run.config.train.threads == 1 and run.config.train.amp == "bf16"
    assert torch.get_num_threads() == 1
    assert 0.0 <= run.metrics["accuracy"] <= 1.0
