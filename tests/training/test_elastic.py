"""torchrun jobs that lose a process: torchelastic's restart resumes them, a resume by hand continues them, and
the weights come out bit-identical to an uninterrupted job's; several nodes on 127.0.0.1; a failing rank."""
from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from rich.console import Console
from safetensors.torch import load_file

import convlab
from convlab.errors import ConvlabError
from convlab.training.checkpoint import CHECKPOINTS, LAST, checkpoint_position

pytestmark = [pytest.mark.slow,  # every test starts torchrun
              pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                 reason="this torch build has no gloo backend")]

SRC = Path(__file__).resolve().parents[2] / "src"
# Tiny and short, yet drawing from every RNG (shuffling, augmentation, dropout, a per-batch schedule).
FLAGS = ["train", "--data", "digits", "--model", "tiny-cnn", "--epochs", "8", "--batch-size", "32", "--augment",
         "light", "--dropout", "0.2", "--schedule", "onecycle", "--seed", "3", "--quiet", "--deterministic",
         "--threads", "1", "--device", "cpu"]
TWO = ["--standalone", "--nproc_per_node=2"]


def env(tmp_path: Path) -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1", CONVLAB_HOME=str(tmp_path / "home"), PYTHONUNBUFFERED="1",
                PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]))


def torchrun(launcher: list[str], args: list[str], script: Path | None = None) -> list[str]:
    """`python -m torch.distributed.run LAUNCHER -m convlab ARGS`, or a script that sets up a fault first."""
    target = [str(script)] if script else ["-m", "convlab"]
    return [sys.executable, "-m", "torch.distributed.run", *launcher, *target, *args]


def fault_script(tmp_path: Path, prelude: str) -> Path:
    """A script that runs `prelude` (Python source) in every worker, then convlab's CLI."""
    path = tmp_path / "with_fault.py"
    path.write_text(f"{prelude}\nimport sys\nfrom convlab.cli import main\nsys.exit(main(sys.argv[1:]))\n")
    return path


def run(command: list[str], tmp_path: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=tmp_path, env=env(tmp_path), capture_output=True, text=True, timeout=timeout)


def start(command: list[str], tmp_path: Path) -> subprocess.Popen:
    return subprocess.Popen(command, cwd=tmp_path, env=env(tmp_path), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for_line(child: subprocess.Popen, prefix: str) -> list[str]:
    """Read the job's output until a line starts with `prefix` (the kill point: no sleeps)."""
    lines = []
    for line in child.stdout:
        lines.append(line)
        if line.startswith(prefix):
            return lines
    raise AssertionError(f"the job ended before printing {prefix!r}: {''.join(lines)}{child.stderr.read()[-3000:]}")


def workers(agent: int) -> dict[int, int]:
    """{RANK: pid} of the agent's workers (from /proc: parent pids and environments; each worker has its own
    session, so killing the agent's process group would not reach them)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            environ = dict(item.split(b"=", 1) for item in (entry / "environ").read_bytes().split(b"\0") if b"=" in item)
        except (OSError, IndexError, ValueError):
            continue
        if parent == agent and b"RANK" in environ:
            found[int(environ[b"RANK"])] = int(entry.name)
    return found


def worker_pid(agent: int, rank: int) -> int:
    pids = workers(agent)
    assert rank in pids, f"no worker with RANK={rank} under torchrun pid {agent}"
    return pids[rank]


def finish(child: subprocess.Popen, lines: list[str]) -> subprocess.CompletedProcess:
    stdout, stderr = child.communicate(timeout=300)
    return subprocess.CompletedProcess(child.args, child.returncode, "".join(lines) + stdout, stderr)


def assert_same_weights(a: Path, b: Path) -> None:
    """Bit-identical tensors."""
    ta, tb = load_file(str(a)), load_file(str(b))
    assert ta.keys() == tb.keys()
    for name in ta:
        assert ta[name].numpy().tobytes() == tb[name].numpy().tobytes(), f"{name} differs"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The uninterrupted two-process job."""
    tmp_path = tmp_path_factory.mktemp("reference")
    done = run(torchrun(TWO, FLAGS + ["--out", "run"]), tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    return tmp_path / "run" / "model.safetensors"


def test_a_killed_rank_is_restarted_by_torchelastic_and_the_job_ends_bit_identical(reference, tmp_path):
    """No --out: the folder is named after the job id, so the restarted job finds it."""
    job = start(torchrun([*TWO, "--max-restarts=1"], FLAGS), tmp_path)
    lines = wait_for_line(job, "epoch 2/8")
    os.kill(worker_pid(job.pid, rank=1), signal.SIGKILL)
    done = finish(job, lines)
    assert done.returncode == 0, done.stderr[-3000:]
    folders = list((tmp_path / "runs").iterdir())
    assert len(folders) == 1, folders
    assert f"torchelastic restart 1: resuming runs/{folders[0].name} after epoch " in done.stdout
    assert_same_weights(reference, folders[0] / "model.safetensors")
    assert json.loads((folders[0] / "metrics.json").read_text())["epochs_run"] == 8


def test_a_kill_inside_an_epoch_resumes_from_the_step_checkpoint_bit_identical(reference, tmp_path):
    """Rank 1 SIGKILLs itself at epoch 2, batch 7 (of 21), on the first attempt only: after the checkpoint at
    batch 5 (--checkpoint-every 5), whose barrier it has passed."""
    script = fault_script(tmp_path, (
        "import os, signal\n"
        "from convlab.training import checkpoint\n"
        "_on_batch_end = checkpoint.Checkpointer.on_batch_end\n"
        "def on_batch_end(self, state, logs):\n"
        "    _on_batch_end(self, state, logs)\n"
        "    if (os.environ['RANK'], os.environ['TORCHELASTIC_RESTART_COUNT'], state.epoch, logs['batch']) == "
        "('1', '0', 2, 7):\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "checkpoint.Checkpointer.on_batch_end = on_batch_end\n"))
    done = run(torchrun([*TWO, "--max-restarts=1"], FLAGS + ["--out", "run", "--checkpoint-every", "5"], script),
               tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "torchelastic restart 1: resuming run after epoch 1, batch 5\n" in done.stdout
    assert "checkpoints: " in done.stdout and " ms each" in done.stdout
    assert_same_weights(reference, tmp_path / "run" / "model.safetensors")


def test_rank_0_killed_before_the_first_checkpoint_is_restarted_afresh_and_ends_bit_identical(reference, tmp_path):
    """Rank 0 SIGKILLs itself as training begins, on the first attempt only: it has written config.yaml but no
    checkpoint yet (and had no chance to remove the folder), so the restart starts the run anew in the same
    folder instead of refusing it."""
    script = fault_script(tmp_path, (
        "import os, signal\n"
        "from convlab.training import checkpoint\n"
        "_on_train_begin = checkpoint.Checkpointer.on_train_begin\n"
        "def on_train_begin(self, state):\n"
        "    if (os.environ['RANK'], os.environ['TORCHELASTIC_RESTART_COUNT']) == ('0', '0'):\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "    _on_train_begin(self, state)\n"
        "checkpoint.Checkpointer.on_train_begin = on_train_begin\n"))
    done = run(torchrun([*TWO, "--max-restarts=1"], FLAGS + ["--out", "run"], script), tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert ("torchelastic restart 1: the attempt before died before its first checkpoint; starting run afresh\n"
            in done.stdout)
    assert "already holds a run" not in done.stderr
    assert_same_weights(reference, tmp_path / "run" / "model.safetensors")


def test_a_restarting_job_into_a_finished_run_folder_is_still_refused(reference, tmp_path):
    finished = reference.parent
    before = reference.read_bytes()
    done = run(torchrun([*TWO, "--max-restarts=1"], FLAGS + ["--out", str(finished)]), tmp_path)
    assert done.returncode != 0
    assert f"--out {finished} already holds a run" in done.stderr
    assert reference.read_bytes() == before


def test_resume_by_hand_after_the_whole_job_was_killed_is_bit_identical(reference, tmp_path):
    job = start(torchrun(TWO, FLAGS + ["--out", "run"]), tmp_path)
    wait_for_line(job, "epoch 2/8")
    pids = workers(job.pid)
    for pid in [job.pid, *pids.values()]:  # the agent, then every worker: as a machine that dies
        os.kill(pid, signal.SIGKILL)
    job.communicate(timeout=60)
    assert not (tmp_path / "run" / "model.safetensors").exists()
    saved = checkpoint_position(tmp_path / "run" / CHECKPOINTS / LAST)
    assert saved["world_size"] == 2 and saved["epoch"] >= 1
    # One process cannot continue it: the onecycle schedule was planned over the steps of two shards.
    with pytest.raises(ConvlabError, match=r"was written by 2 processes and the run's learning-rate schedule is "
                                           r"planned step by step over their shards; resume it with 2 processes"):
        convlab.train(resume=str(tmp_path / "run"), console=Console(file=io.StringIO()))
    done = run(torchrun(TWO, ["train", "--resume", "run", "--quiet"]), tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"resuming run after epoch {saved['epoch']}\n" in done.stdout
    assert "note: the checkpoint was written by" not in done.stdout
    assert_same_weights(reference, tmp_path / "run" / "model.safetensors")


def test_two_agents_on_one_machine_act_as_two_nodes_and_write_one_run_folder(tmp_path):
    flags = ["train", "--data", "digits", "--model", "tiny-cnn", "--epochs", "8", "--quiet", "--threads", "1",
             "--device", "cpu"]
    port = free_port()
    nodes = ["--nnodes=2", "--nproc_per_node=1", "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}",
             "--rdzv-id=two-nodes"]
    agents = [start(torchrun(nodes, flags), tmp_path) for _ in range(2)]
    outputs = [agent.communicate(timeout=300) for agent in agents]
    for agent, (stdout, stderr) in zip(agents, outputs):
        assert agent.returncode == 0, stderr[-3000:]
    assert sum(stdout.count("run folder:") for stdout, _ in outputs) == 1  # only global rank 0 prints
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["digits-tiny-cnn-two-nodes"]
    assert "distributed: 2 processes" in "".join(stdout for stdout, _ in outputs)
    nodes_accuracy = json.loads((tmp_path / "runs" / "digits-tiny-cnn-two-nodes" / "metrics.json").read_text())
    single = run([sys.executable, "-m", "convlab", *flags, "--out", "single"], tmp_path)
    assert single.returncode == 0, single.stderr[-3000:]
    single_accuracy = json.loads((tmp_path / "single" / "metrics.json").read_text())["accuracy"]
    assert abs(nodes_accuracy["accuracy"] - single_accuracy) <= 0.02, (nodes_accuracy["accuracy"], single_accuracy)


def test_a_rank_that_raises_ends_the_job_within_the_timeout_naming_the_rank(tmp_path):
    script = fault_script(tmp_path, (
        "import os, sys, time\n"
        "from convlab.training import checkpoint\n"
        "def on_epoch_begin(self, state):\n"
        "    if os.environ['RANK'] == '1' and state.epoch == 2:\n"
        "        print(f'fault at {time.time()}', file=sys.stderr, flush=True)\n"
        "        raise RuntimeError('injected fault in epoch 2')\n"
        "checkpoint.Checkpointer.on_epoch_begin = on_epoch_begin\n"))
    timeout = 20
    done = run(torchrun(TWO, FLAGS + ["--out", "run", "--dist-timeout", str(timeout)], script), tmp_path)
    ended = time.time()
    assert done.returncode != 0
    assert "convlab train: rank 1 of 2: failed with RuntimeError: injected fault in epoch 2" in done.stderr
    fault = float(next(line for line in done.stderr.splitlines() if line.startswith("fault at "))[9:])
    assert ended - fault < timeout, f"the job took {ended - fault:.1f}s to end after the fault"


def test_a_rank_that_hangs_fails_the_job_after_the_dist_timeout_not_torchs_30_minutes(tmp_path):
    """Rank 1 stops answering in epoch 2; rank 0's next collective gives up after --dist-timeout 5."""
    script = fault_script(tmp_path, (
        "import os, sys, time\n"
        "from convlab.training import checkpoint\n"
        "def on_epoch_begin(self, state):\n"
        "    if os.environ['RANK'] == '1' and state.epoch == 2:\n"
        "        print(f'hang at {time.time()}', file=sys.stderr, flush=True)\n"
        "        time.sleep(600)\n"
        "checkpoint.Checkpointer.on_epoch_begin = on_epoch_begin\n"))
    done = run(torchrun(TWO, FLAGS + ["--out", "run", "--dist-timeout", "5"], script), tmp_path)
    ended = time.time()
    assert done.returncode != 0
    assert "convlab train: rank 0 of 2: failed with RuntimeError:" in done.stderr
    assert "Timed out waiting 5000ms" in done.stderr
    hang = float(next(line for line in done.stderr.splitlines() if line.startswith("hang at "))[8:])
    assert 5 <= ended - hang < 60, f"the job ended {ended - hang:.1f}s after rank 1 hung"
