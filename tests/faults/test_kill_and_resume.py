"""A run killed at any moment (SIGKILL, Ctrl-C, a crash inside a checkpoint write) and resumed with
--resume ends with weights bit-identical to a run that was never interrupted."""
from __future__ import annotations

import signal
import subprocess

import pytest
from in_process import train_in_one_thread

from convlab.training.checkpoint import CHECKPOINTS, LAST, checkpoint_position

from .conftest import RUN_FLAGS, assert_same_weights, child_env, convlab_command

pytestmark = pytest.mark.slow  # every test runs convlab in a child process


def _keywords(flags: list[str]) -> dict:
    """The CLI flags above as convlab.train keywords."""
    out, i = {}, 0
    while i < len(flags):
        key = flags[i][2:].replace("-", "_")
        if i + 1 < len(flags) and not flags[i + 1].startswith("--"):
            value = flags[i + 1]
            out[key] = int(value) if value.isdigit() else float(value) if value.replace(".", "").isdigit() else value
            i += 2
        else:
            out[key], i = True, i + 1
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run."""
    out = tmp_path_factory.mktemp("reference") / "run"
    train_in_one_thread(out=str(out), **_keywords(RUN_FLAGS))
    return out


def _kill_after_epoch_lines(out, tmp_path, lines: int, sig=signal.SIGKILL) -> subprocess.CompletedProcess:
    """Start a run and send `sig` once it has printed `lines` epoch lines."""
    child = subprocess.Popen(convlab_command("train", *RUN_FLAGS, "--out", str(out)), env=child_env(tmp_path),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = 0
    for line in child.stdout:
        if line.startswith("epoch"):
            seen += 1
            if seen == lines:
                child.send_signal(sig)
                break
    stdout, stderr = child.communicate(timeout=240)
    return subprocess.CompletedProcess(child.args, child.returncode, stdout, stderr)


def _metrics_rows(run_dir):
    """metrics.csv without the timing columns."""
    return [",".join(row.split(",")[:6]) for row in (run_dir / "metrics.csv").read_text().splitlines()]


@pytest.mark.parametrize("lines", [1, 2])
def test_sigkill_after_epoch_lines_then_resume_is_bit_identical(reference, tmp_path, lines):
    out = tmp_path / "run"
    killed = _kill_after_epoch_lines(out, tmp_path, lines)
    assert killed.returncode == -signal.SIGKILL
    assert not (out / "model.safetensors").exists()
    assert f"resuming {out}" in train_in_one_thread(resume=str(out), quiet=True)
    assert_same_weights(reference / "model.safetensors", out / "model.safetensors")
    assert _metrics_rows(out) == _metrics_rows(reference)


def test_sigkill_inside_a_checkpoint_write_then_resume_is_bit_identical(reference, run_child, tmp_path):
    """The epoch-2 checkpoint's temp file is written in full, then the process dies before the rename."""
    prelude = (
        "import os, signal\n"
        "_replace, _calls = os.replace, []\n"
        "def replace(src, dst):\n"
        "    if str(dst).endswith('last.safetensors'):\n"
        "        _calls.append(dst)\n"
        "        if len(_calls) == 3:\n"
        "            os.kill(os.getpid(), signal.SIGKILL)\n"
        "    return _replace(src, dst)\n"
        "os.replace = replace\n")
    out = tmp_path / "run"
    killed = run_child("train", *RUN_FLAGS, "--out", str(out), prelude=prelude)
    assert killed.returncode == -signal.SIGKILL
    stale = list((out / CHECKPOINTS).glob(".last.safetensors.*.tmp"))
    assert stale, "the killed write should leave its temp file behind"
    # Writes: before training, after epoch 1, after epoch 2 (killed before its rename).
    assert checkpoint_position(out / CHECKPOINTS / LAST) == {"epoch": 1, "batch": 0, "world_size": 1}  # the old one, intact
    assert "after epoch 1\n" in train_in_one_thread(resume=str(out), quiet=True)
    assert not list((out / CHECKPOINTS).glob(".*.tmp"))
    assert_same_weights(reference / "model.safetensors", out / "model.safetensors")


def test_ctrl_c_saves_mid_epoch_and_prints_the_resume_command(reference, run_child, tmp_path):
    """SIGINT lands inside epoch 2: the child reports each batch and waits a little after it."""
    prelude = (
        "import time\n"
        "from convlab.training import callbacks\n"
        "def on_batch_end(self, state, logs):\n"
        "    print(f'batch {state.epoch} {logs[\"batch\"]}', flush=True)\n"
        "    time.sleep(0.05)\n"
        "callbacks.PlainLogger.on_batch_end = on_batch_end\n")
    out = tmp_path / "run"
    child = subprocess.Popen(convlab_command("train", *RUN_FLAGS, "--out", str(out), prelude=prelude),
                             env=child_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in child.stdout:
        if line.strip() == "batch 2 5":
            child.send_signal(signal.SIGINT)
            break
    stdout, stderr = child.communicate(timeout=240)
    assert child.returncode == 130, stderr
    assert f"continue with: convlab train --resume {out}" in stderr
    assert "Traceback" not in stderr
    position = checkpoint_position(out / CHECKPOINTS / LAST)
    assert position["epoch"] == 1 and 5 <= position["batch"] < 21  # saved inside epoch 2 (21 batches)
    resumed = run_child("train", "--resume", str(out), "--quiet")  # the command the hint gives
    assert resumed.returncode == 0, resumed.stderr
    assert f"after epoch 1, batch {position['batch']}" in resumed.stdout
    assert_same_weights(reference / "model.safetensors", out / "model.safetensors")
    assert _metrics_rows(out) == _metrics_rows(reference)


def test_checkpoint_every_steps_then_sigkill_inside_an_epoch_resumes_bit_identical(reference, run_child, tmp_path):
    """--checkpoint-every 5: the child SIGKILLs itself at epoch 2, batch 7 (of 21), two batches after a step
    checkpoint; the resumed run starts from batch 5, and saving inside epochs changed nothing in the maths."""
    prelude = (
        "import os, signal\n"
        "from convlab.training import checkpoint\n"
        "_on_batch_end = checkpoint.Checkpointer.on_batch_end\n"
        "def on_batch_end(self, state, logs):\n"
        "    _on_batch_end(self, state, logs)\n"
        "    if (state.epoch, logs['batch']) == (2, 7):\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "checkpoint.Checkpointer.on_batch_end = on_batch_end\n")
    out = tmp_path / "run"
    killed = run_child("train", *RUN_FLAGS, "--out", str(out), "--checkpoint-every", "5", prelude=prelude)
    assert killed.returncode == -signal.SIGKILL
    assert checkpoint_position(out / CHECKPOINTS / LAST) == {"epoch": 1, "batch": 5, "world_size": 1}
    printed = train_in_one_thread(resume=str(out), quiet=True)
    assert f"resuming {out} after epoch 1, batch 5\n" in printed
    assert "checkpoints: " in printed and "(every 5 steps and at each epoch's end)" in printed
    assert_same_weights(reference / "model.safetensors", out / "model.safetensors")
    assert _metrics_rows(out) == _metrics_rows(reference)
