"""Messages a user meets when something is wrong: one line that says what happened, the file, and what to do."""
import pickle
import signal

import numpy as np
import pytest
import torch

import convlab
from convlab.cli import main
from convlab.data.cifar import write_cifar10
from convlab.errors import ConvlabError
from convlab.models.weights import load_state_dict_file
from convlab.training.callbacks import Callback
from convlab.training.checkpoint import TrainingInterrupted


def test_a_weights_file_holding_a_module_names_the_object_and_what_to_pass(tmp_path):
    path = tmp_path / "module.pt"
    torch.save({"model": torch.nn.Linear(2, 2)}, path)
    with pytest.raises(ConvlabError) as err:
        load_state_dict_file(path)
    assert str(err.value) == (
        f"{path} was not loaded: besides tensors it holds a Python object (torch.nn.modules.linear.Linear), "
        "which could run code when unpickled; pass a state dict of tensors instead (a .safetensors file, or "
        "torch.save(model.state_dict(), ...) from a source you trust)")


class _RunsCode:
    def __reduce__(self):
        return (print, ("this would run at load time",))


def test_a_weights_file_that_would_run_code_is_one_line(tmp_path):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as handle:
        pickle.dump({"conv1.weight": _RunsCode()}, handle)
    with pytest.raises(ConvlabError) as err:
        load_state_dict_file(path)
    message = str(err.value)
    assert message.startswith(f"{path} was not loaded: besides tensors it holds Python objects")
    assert "\n" not in message and "weights_only" not in message  # none of torch's advice to load it anyway


def test_a_cifar_folder_missing_a_batch_says_which_and_what_to_pass(tmp_path, capsys):
    rng = np.random.default_rng(0)
    folder = write_cifar10(tmp_path, rng.integers(0, 256, (10, 3, 32, 32), dtype=np.uint8), np.arange(10) % 10,
                           rng.integers(0, 256, (4, 3, 32, 32), dtype=np.uint8), np.arange(4),
                           [f"c{i}" for i in range(10)])
    (folder / "data_batch_4").unlink()
    assert main(["train", "--data", "cifar10", "--data-dir", str(folder), "--out", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err == (
        f"convlab train: error: CIFAR-10 folder {folder} is missing data_batch_4; pass the complete "
        "cifar-10-batches-py folder unpacked from cifar-10-python.tar.gz, or the archive itself\n")


class _CtrlCAt(Callback):
    def on_batch_end(self, state, logs):
        if logs["batch"] == 2:
            signal.raise_signal(signal.SIGINT)


def test_ctrl_c_on_a_scratch_run_says_it_stopped_and_the_command_that_trains_again(tmp_path):
    run = tmp_path / "run"
    with pytest.raises(TrainingInterrupted) as err:
        convlab.train(data="digits", model="tiny-cnn", engine="scratch", epochs=2, out=str(run), quiet=True,
                      callbacks=[_CtrlCAt()])
    assert str(err.value) == (f"stopped during epoch 1; the scratch engine cannot resume a run, so train it again "
                              f"with: convlab train --config {run / 'config.yaml'} --out NEW_DIR")
