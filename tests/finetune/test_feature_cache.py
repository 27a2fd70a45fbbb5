"""The feature cache of frozen backbones: same weights as full passes, reused, rebuilt, its fallbacks and limits."""
import io
import signal

import pytest
import torch
from rich.console import Console

import convlab
from convlab import load_run
from convlab.errors import ConvlabError
from convlab.training import feature_cache
from convlab.training.callbacks import Callback
from convlab.training.checkpoint import CHECKPOINTS, LAST, TrainingInterrupted

SMALL = dict(data="digits", classes="0,1,2", train_per_class=12, epochs=2, batch_size=8, quiet=True)


def _finetune(source, out, **overrides):
    """A fine-tune of `source` on three digit classes; returns the run and what it printed."""
    buffer = io.StringIO()
    settings = {**SMALL, "strategy": "linear-probe", **overrides}
    run = convlab.finetune(str(source), out=str(out), console=Console(file=buffer, width=300), **settings)
    return run, buffer.getvalue()


def _assert_same_weights(a, b):
    state_a, state_b = a.model.state_dict(), b.model.state_dict()
    assert state_a.keys() == state_b.keys()
    for key in state_a:
        torch.testing.assert_close(state_a[key], state_b[key], rtol=1e-5, atol=1e-6, msg=key)


def _cache_folders():
    home = feature_cache.features_home()
    return sorted(p.name for p in home.iterdir()) if home.is_dir() else []


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["linear-probe", "two-stage"])
def test_the_head_trained_on_cached_features_equals_full_passes(digits_run, tmp_path, strategy):
    # no validation split: the last epoch's weights are kept, so stage 2's backbone is what the run returns
    epochs = 3 if strategy == "two-stage" else 2
    cached, said = _finetune(digits_run.path, tmp_path / "cached", strategy=strategy, epochs=epochs, val_fraction=0.0)
    full, said_full = _finetune(digits_run.path, tmp_path / "full", strategy=strategy, epochs=epochs,
                                val_fraction=0.0, no_feature_cache=True)
    assert "features: stage 1 trains the head on cached backbone features" in said
    assert "features: computing the frozen backbone's output for 36 images (1 view of 36 training images)" in said
    assert "features: not cached (--no-feature-cache)" in said_full
    _assert_same_weights(cached, full)
    assert cached.metrics["accuracy"] == full.metrics["accuracy"]
    if strategy == "two-stage":  # stage 2 unfroze the backbone: full passes again, and the backbone moved
        source = digits_run.model.state_dict()["features.0.weight"]
        assert not torch.equal(cached.model.state_dict()["features.0.weight"].cpu(), source.cpu())
        assert "epoch 2: stage 2/2 trains" in said


@pytest.mark.slow
def test_a_second_finetune_reuses_the_cache_and_other_weights_or_preprocessing_rebuild_it(digits_run, tmp_path):
    _, first = _finetune(digits_run.path, tmp_path / "a")
    assert "features: computing" in first and len(_cache_folders()) == 1
    # another head and lr: the same backbone, data and preprocessing, so no second extraction
    second, said = _finetune(digits_run.path, tmp_path / "b", head="mlp:16", lr=0.01)
    assert "features: reused" in said and "features: computing" not in said
    assert _cache_folders() == _cache_folders()[:1]
    assert isinstance(second.model.classifier[1], convlab.models.heads.MLPHead)
    # other weights (the first fine-tune's backbone is the source's, so take a run trained further)
    other = convlab.train(data="digits", model="tiny-cnn", epochs=1, seed=3, out=str(tmp_path / "other"), quiet=True)
    _, said = _finetune(other.path, tmp_path / "c")
    assert "features: computing" in said and len(_cache_folders()) == 2
    # other preprocessing: another input size
    _, said = _finetune(digits_run.path, tmp_path / "d", image_size=10)
    assert "features: computing" in said and len(_cache_folders()) == 3


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["truncated", "garbage", "wrong rows"])
def test_a_damaged_cache_file_is_named_rebuilt_and_rewritten(digits_run, tmp_path, damage):
    from safetensors.torch import load, load_file, save_file

    first, _ = _finetune(digits_run.path, tmp_path / "a")
    [key] = _cache_folders()
    stored = feature_cache.features_home() / key / feature_cache.FEATURES_FILE
    good = stored.read_bytes()
    if damage == "truncated":
        stored.write_bytes(good[:len(good) // 2])
    elif damage == "garbage":
        stored.write_bytes(b"\x07not a safetensors file" * 40)
    else:  # a readable file that holds other rows than this run's
        save_file({"train": torch.zeros(1, 5, 7)}, str(stored))
    again, said = _finetune(digits_run.path, tmp_path / "b")
    assert f"features: {stored} is unreadable (" in said and "computing them again and rewriting it" in said
    assert "features: computing" in said and "Traceback" not in said
    assert again.metrics["accuracy"] == first.metrics["accuracy"]
    _assert_same_weights(first, again)
    rewritten = load_file(str(stored))
    torch.testing.assert_close(rewritten["train"], load(good)["train"])  # rebuilt as before
    _, third = _finetune(digits_run.path, tmp_path / "c")
    assert "features: reused" in third


@pytest.mark.slow
def test_augmentation_trains_uncached_unless_views_are_cached(digits_run, tmp_path):
    _, said = _finetune(digits_run.path, tmp_path / "a", augment="light")
    assert "features: not cached (--augment light changes the images every epoch; --feature-views K" in said
    viewed, said = _finetune(digits_run.path, tmp_path / "b", augment="light", feature_views=3)
    assert "(3 augmented views per image)" in said and "3 views of 32 training images, 4 validation" in said
    from safetensors.torch import load_file

    [key] = _cache_folders()
    stored = load_file(str(feature_cache.features_home() / key / feature_cache.FEATURES_FILE))
    assert stored["train"].shape[:2] == (3, 32) and stored["val"].shape[0] == 4
    assert not torch.equal(stored["train"][0], stored["train"][1])  # the views differ
    # and one view is what the model's own backbone gives for that augmented image: checked by the head's input
    assert load_run(viewed.path).model.classifier[1].in_features == stored["train"].shape[2]


@pytest.mark.slow
def test_no_room_on_disk_keeps_them_in_memory_and_no_room_at_all_trains_uncached(digits_run, tmp_path, monkeypatch):
    def full_disk(folder, needed):
        raise ConvlabError(f"the run folder {folder} has 0.0 MB free; free some space")

    monkeypatch.setattr(feature_cache, "check_free_space", full_disk)
    in_memory, said = _finetune(digits_run.path, tmp_path / "a")
    assert "kept in memory only (the run folder" in said and _cache_folders() == []
    monkeypatch.setattr(feature_cache, "available_memory", lambda: 0)
    nowhere, said = _finetune(digits_run.path, tmp_path / "b")
    assert "fit neither on disk nor in memory; training uncached" in said
    _assert_same_weights(in_memory, nowhere)


@pytest.mark.slow
def test_epochs_on_cached_features_skip_their_checkpoints_but_the_last_one_is_saved(digits_run, tmp_path):
    from convlab.training.checkpoint import checkpoint_position

    run, said = _finetune(digits_run.path, tmp_path / "a", epochs=4)
    # the whole model is saved before training and after the last epoch; epochs 1-3 cost less than a save
    assert "checkpoints: 1 saved (at each epoch's end; 3 head-only epochs on cached features unsaved)" in said
    assert checkpoint_position(run.path / CHECKPOINTS / LAST)["epoch"] == 4
    # with a validation split the best epoch's weights are written with the next save
    from safetensors import safe_open

    with safe_open(str(run.path / CHECKPOINTS / "best.safetensors"), framework="pt") as best:
        assert best.metadata()["epoch"] == str(run.metrics["best_epoch"])
        torch.testing.assert_close(best.get_tensor("classifier.1.weight"), run.model.state_dict()["classifier.1.weight"])
    two_stage, said = _finetune(digits_run.path, tmp_path / "b", strategy="two-stage", epochs=4, head_epochs=2)
    assert "3 saved (at each epoch's end; 1 head-only epoch on cached features unsaved)" in said  # 2, 3, 4


class _CtrlCAt(Callback):
    """A SIGINT at epoch 2, batch 2, as Ctrl-C would send."""

    def on_batch_end(self, state, logs):
        if state.epoch == 2 and logs["batch"] == 2:
            signal.raise_signal(signal.SIGINT)


@pytest.mark.slow
def test_an_interrupted_cached_finetune_resumes_to_the_same_weights(digits_run, tmp_path):
    whole, _ = _finetune(digits_run.path, tmp_path / "whole", epochs=3)
    with pytest.raises(TrainingInterrupted):
        convlab.finetune(str(digits_run.path), out=str(tmp_path / "cut"), callbacks=[_CtrlCAt()],
                         **{**SMALL, "strategy": "linear-probe", "epochs": 3})
    resumed = convlab.finetune(resume=tmp_path / "cut", quiet=True)
    _assert_same_weights(whole, resumed)
    assert resumed.metrics["epochs_run"] == 3


@pytest.mark.slow
def test_the_mlp_head_is_recorded_and_load_run_rebuilds_it(digits_run, tmp_path):
    run, _ = _finetune(digits_run.path, tmp_path / "mlp", head="mlp:24,dropout=0.5")
    loaded = load_run(run.path)
    assert loaded.config.finetune.head == "mlp:24,dropout=0.5"
    head = loaded.model.classifier[1]
    assert [type(m).__name__ for m in head] == ["Linear", "ReLU", "Dropout", "Linear"]
    assert head[0].out_features == 24 and head[2].p == 0.5 and head[3].out_features == 3
    images = run.test_data().images[:5]
    assert (loaded.predict_arrays(images).argmax(1) == run.predict_arrays(images).argmax(1)).all()


@pytest.mark.parametrize("spec, message", [
    ("mlp", "--head 'mlp': not a head convlab knows; use linear, mlp:WIDTH"),
    ("mlp:0", "--head mlp:0: WIDTH must be at least 1"),
    ("mlp:64,dropout=1.5", "dropout in [0, 1)"),
    ("conv:3", "not a head convlab knows"),
])
def test_a_wrong_head_is_refused_by_name(spec, message):
    from convlab.models.heads import parse_head

    with pytest.raises(ConvlabError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        parse_head(spec)


def test_the_mlp_head_replaces_the_classifier_and_keeps_the_backbone():
    from convlab.models.freeze import head_name, parameter_groups
    from convlab.models.heads import MLPHead, put_head
    from convlab.models.registry import create_model

    model = put_head(create_model("tiny-cnn", 1, 4, (8, 8), 0.0), "mlp:32", 4)
    assert head_name(model) == "classifier.1" and isinstance(model.classifier[1], MLPHead)
    head = next(g for g in parameter_groups(model) if g.name == "head")
    assert head.params == ["classifier.1.0.weight", "classifier.1.0.bias", "classifier.1.3.weight",
                           "classifier.1.3.bias"]
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 4)


def test_dropout_before_the_head_or_train_bn_turns_the_cache_off():
    from convlab import config as cfg
    from convlab.models.registry import create_model
    from convlab.training.freezing import FreezePlan

    conf = cfg.Config()
    conf.finetune.strategy = "linear-probe"
    model = create_model("mnist-cnn", 1, 3, (28, 28), 0.3)  # dropout before each fully connected layer
    plan = FreezePlan.of(model, conf)
    reason = feature_cache.why_uncached(conf, plan, model, distributed=False)
    assert reason is not None and "Dropout, p=0.3" in reason
    model = create_model("mnist-cnn", 1, 3, (28, 28), 0.0)
    assert feature_cache.why_uncached(conf, FreezePlan.of(model, conf), model, distributed=False) is None
    conf.finetune.train_bn = True
    bn_model = create_model("resnet8", 3, 3, (16, 16), 0.0)
    assert "--train-bn" in feature_cache.why_uncached(conf, FreezePlan.of(bn_model, conf), bn_model, False)


@pytest.mark.slow
def test_an_mlp_head_run_quantizes_and_loads_back(digits_run, tmp_path):
    from convlab.compress import load_quantized, quantize_run

    run, _ = _finetune(digits_run.path, tmp_path / "mlp", head="mlp:24")
    quantize_run(run.path, out=tmp_path / "int8", console=Console(file=io.StringIO()), latency_seconds=0.01)
    loaded = load_quantized(tmp_path / "int8")
    images = run.test_data().images[:20]
    agree = (loaded.predict_arrays(images).argmax(1) == run.predict_arrays(images).argmax(1)).mean()
    assert agree >= 0.9


def _documented_recipe() -> list[str]:
    """The one-line frozen-backbone recipe of docs/fine-tuning.md, as a user copies it."""
    import re
    import shlex
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "fine-tuning.md").read_text()
    section = text.split("## The texts' recipe in one line", 1)[1]
    [line] = re.findall(r"^convlab finetune .*$", section.split("```bash", 1)[1].split("```", 1)[0], re.M)
    return shlex.split(line)[1:]


@pytest.mark.slow
def test_the_documented_frozen_recipe_on_an_image_folder_uses_the_cache(make_image_folder, tmp_path, capsys):
    import torchvision
    import yaml

    from convlab.cli import main

    args = _documented_recipe()
    assert "imagefolder:PHOTOS" in args and "--strategy" in args
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet50().state_dict(), tmp_path / "resnet50.pt")  # no download in tests
    photos = make_image_folder(tmp_path / "photos", per_class=5)
    args = [f"imagefolder:{photos}" if a == "imagefolder:PHOTOS" else a for a in args]
    code = main([*args, "--weights", str(tmp_path / "resnet50.pt"), "--image-size", "32", "--epochs", "2",
                 "--out", str(tmp_path / "run"), "--quiet"])
    out = capsys.readouterr().out
    assert code == 0
    assert "note: augment none: --strategy linear-probe trains only the head" in out
    assert "features: stage 1 trains the head on cached backbone features (computed once)" in out
    assert "features: not cached" not in out
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["data"]["augment"] == "none"
    # an augmentation asked for by flag is kept (and turns the cache off, saying why)
    main([*args, "--weights", str(tmp_path / "resnet50.pt"), "--image-size", "32", "--epochs", "1",
          "--augment", "light", "--out", str(tmp_path / "run2"), "--quiet"])
    assert "features: not cached (--augment light changes the images every epoch" in capsys.readouterr().out
