"""Pruning: the requested sparsity is reached, masks become permanent, the variant folder loads."""
import json

import pytest
import torch
import yaml

from convlab import load_run
from convlab.cli import main
from convlab.compress.measure import prunable_weights, weight_sparsity
from convlab.compress.prune import apply_pruning, make_permanent, zero_channels
from convlab.models.registry import create_model


def conv_and_linear_weights(model):
    return torch.cat([module.weight.detach().flatten() for _, module in prunable_weights(model)])


@pytest.mark.parametrize("amount", [0.3, 0.5, 0.9])
def test_global_pruning_zeroes_the_requested_share_of_the_smallest_weights(amount):
    torch.manual_seed(0)
    model = create_model("lenet", 1, 10, (28, 28))
    original = conv_and_linear_weights(model).abs()
    apply_pruning(model, amount)
    make_permanent(model)
    assert not any("weight_orig" in key or "weight_mask" in key for key in model.state_dict())
    weights = conv_and_linear_weights(model)
    expected_zeros = round(amount * weights.numel())
    assert int((weights == 0).sum()) == expected_zeros
    assert weight_sparsity(model) == pytest.approx(amount, abs=1 / weights.numel())
    kept, dropped = original[weights != 0], original[weights == 0]
    assert kept.min() >= dropped.max()  # global L1: every dropped weight is smaller than every kept one


def test_structured_pruning_zeroes_whole_output_channels_of_each_conv():
    torch.manual_seed(0)
    model = create_model("mnist-cnn", 1, 10, (28, 28))
    norms = {name: module.weight.detach().flatten(1).norm(dim=1) for name, module in prunable_weights(model)
             if isinstance(module, torch.nn.Conv2d)}
    apply_pruning(model, 0.25, structured=True)
    make_permanent(model)
    for name, module in prunable_weights(model):
        if isinstance(module, torch.nn.Conv2d):
            zero = module.weight.flatten(1).abs().sum(1) == 0
            assert int(zero.sum()) == round(0.25 * module.out_channels), name
            assert norms[name][zero].max() <= norms[name][~zero].min()  # the channels with the smallest L2 norm
        else:
            assert int((module.weight == 0).sum()) == 0  # the classifier keeps every class
    assert zero_channels(model) == 8 + 16


def test_prune_run_writes_a_loadable_variant_whose_zeros_survive_fine_tuning(pruned_run, digits_run):
    loaded = load_run(pruned_run.path)  # plain float weights: the ordinary loader reads it
    assert weight_sparsity(loaded.model) == pytest.approx(0.5, abs=1e-3)
    metrics = json.loads((pruned_run.path / "metrics.json").read_text())
    assert metrics["sparsity"] == pytest.approx(0.5, abs=1e-3)
    assert metrics["before"]["sparsity"] == 0.0
    assert metrics["finetune"]["epochs"] == 1
    assert metrics["size_bytes"] == (pruned_run.path / "model.safetensors").stat().st_size
    assert metrics["gzip_mb"] < metrics["before"]["gzip_mb"]  # zeros compress
    assert set(metrics["latency_ms_per_image"]) == {"batch_1", "batch_64"}
    assert metrics["accuracy"] == pytest.approx(loaded.evaluate()["accuracy"])
    provenance = yaml.safe_load((pruned_run.path / "config.yaml").read_text())["provenance"]
    assert provenance["variant"] == "pruned" and provenance["amount"] == 0.5
    assert provenance["source"] == str(digits_run.path)
    # the source run is untouched
    assert weight_sparsity(load_run(digits_run.path).model) == 0.0


def test_prune_cli_rejects_a_bad_amount_in_one_line(capsys, digits_run, tmp_path):
    code = main(["compress", "prune", str(digits_run.path), "--amount", "1.5", "--out", str(tmp_path / "p")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0
    assert "--amount must be in [0, 1), got 1.5" in err


def test_prune_refuses_an_output_folder_that_holds_a_run(capsys, digits_run_copy):
    run_dir = digits_run_copy.path
    before = (run_dir / "model.safetensors").read_bytes()
    code = main(["compress", "prune", str(run_dir), "--out", str(run_dir)])
    assert code == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (run_dir / "model.safetensors").read_bytes() == before


@pytest.mark.slow
def test_prune_fine_tunes_a_run_trained_with_compile(tmp_path, monkeypatch):
    """torch.compile names parameters `_orig_mod.NAME`; the masks, the best weights and the saved files use the
    plain names. Compiled with dynamo's eager backend: the same wrapper and names as inductor's, without its
    minute of C++ builds on a small CPU."""
    from safetensors.torch import load_file

    from convlab import train
    from convlab.compress import prune_run
    from convlab.training import performance

    monkeypatch.setattr(performance, "maybe_compile",
                        lambda model, enabled: torch.compile(model, backend="eager") if enabled else model)
    source = train(data="digits", model="tiny-cnn", epochs=1, compile=True, threads=1, quiet=True,
                   out=str(tmp_path / "compiled"))
    pruned = prune_run(source.path, tmp_path / "pruned", amount=0.5, finetune_epochs=1, quiet=True,
                       latency_seconds=0.01)
    expected = set(create_model("tiny-cnn", 1, 10, (8, 8)).state_dict())
    assert set(load_file(str(pruned.path / "model.safetensors"))) == expected
    assert weight_sparsity(load_run(pruned.path).model) == pytest.approx(0.5, abs=0.01)
