"""convlab.finetune end to end: sources, weight files, head, input adaptation, the run folder and predict."""
import io
import json
import pickle

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from rich.console import Console

import convlab
from convlab import load_run
from convlab.cli import main
from convlab.errors import ConvlabError
from convlab.models.pretrained import read_weights_file

IMAGENET_MEAN = [0.485, 0.456, 0.406]


def _resnet18_state():
    import torchvision

    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None).state_dict()  # random, but torchvision's own layout


@pytest.fixture(scope="module")
def resnet18_files(tmp_path_factory):
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("weights")
    state = _resnet18_state()
    torch.save(state, folder / "resnet18.pt")
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "resnet18.safetensors"))
    return state, folder


@pytest.fixture(scope="module")
def gray_resnet_run(resnet18_files, tmp_path_factory):
    """torchvision resnet18 from a .pt, linear probe on 8x8 gray digits (3 classes) at 32x32."""
    _, folder = resnet18_files
    out = tmp_path_factory.mktemp("ft") / "resnet"
    return convlab.finetune("torchvision:resnet18", weights=str(folder / "resnet18.pt"), data="digits",
                            classes="0,1,2", train_per_class=8, image_size=32, strategy="linear-probe", epochs=1,
                            batch_size=8, val_fraction=0.0, out=str(out), quiet=True)


def test_weights_path_loads_the_backbone_and_rebuilds_the_head(gray_resnet_run, resnet18_files):
    state, _ = resnet18_files
    model_state = gray_resnet_run.model.state_dict()
    for key in ("conv1.weight", "layer3.1.bn2.running_var", "layer4.1.conv2.weight"):
        assert torch.equal(model_state[key].cpu(), state[key]), key  # loaded, and frozen by the linear probe
    assert model_state["fc.weight"].shape == (3, 512) and gray_resnet_run.classes == ["0", "1", "2"]


def test_grayscale_goes_into_the_three_channel_model_and_preprocess_records_it(gray_resnet_run):
    pre = json.loads((gray_resnet_run.path / "preprocess.json").read_text())
    assert pre["channels"] == 3 and pre["data_channels"] == 1 and pre["size"] == [32, 32]
    assert pre["channel_conversion"] == "grayscale repeated into 3 channels"
    assert pre["mean"] == pytest.approx(IMAGENET_MEAN)  # the weights' normalization, not the data's
    assert pre["normalization"].startswith("pretrained: torchvision:resnet18")
    config = yaml.safe_load((gray_resnet_run.path / "config.yaml").read_text())
    assert config["finetune"]["source"] == "torchvision:resnet18"
    assert config["finetune"]["weights"].endswith("resnet18.pt")
    assert config["finetune"]["strategy"] == "linear-probe"
    assert config["model"]["name"] == "resnet18" and config["data"]["image_size"] == 32


def test_predict_on_the_finetuned_run_uses_the_recorded_preprocessing(gray_resnet_run, tmp_path):
    from convlab.data.registry import load_dataset

    image = load_dataset("digits").test.images[0, 0]  # (8, 8) uint8, gray
    Image.fromarray(image, mode="L").save(tmp_path / "digit.png")
    run = load_run(gray_resnet_run.path)
    got = run.predict([tmp_path / "digit.png"], top_k=3)[0]["top"]

    # By hand: gray -> RGB (repeat), bilinear resize to 32x32, ImageNet mean/std.
    rgb = Image.fromarray(image, mode="L").convert("RGB").resize((32, 32), Image.BILINEAR)
    x = torch.from_numpy(np.asarray(rgb, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
    x = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        probs = torch.softmax(run.model.eval()(x), 1)[0].double().numpy()
    expected = {run.classes[i]: probs[i] for i in range(3)}
    assert {t["label"]: t["prob"] for t in got} == pytest.approx(expected, abs=2e-3)


@pytest.mark.slow
def test_safetensors_weights_load_through_the_cli(resnet18_files, tmp_path, capsys):
    state, folder = resnet18_files
    code = main(["finetune", "--from", "torchvision:resnet18", "--weights", str(folder / "resnet18.safetensors"),
                 "--data", "digits", "--classes", "3,4", "--train-per-class", "4", "--image-size", "32",
                 "--strategy", "linear-probe", "--epochs", "1", "--val-fraction", "0", "--out",
                 str(tmp_path / "r"), "--quiet"])
    out = capsys.readouterr().out
    assert code == 0
    assert "11,177,538 parameters, 1,026 trainable in stage 1" in out  # resnet18 with a 2-class head
    assert "stage4" in out and "lr 3.00e-03" in out and "lr -" in out  # the digits recipe's lr; frozen: none
    run = load_run(tmp_path / "r")
    assert torch.equal(run.model.state_dict()["layer2.0.downsample.0.weight"], state["layer2.0.downsample.0.weight"])


@pytest.mark.slow
def test_mismatched_weights_are_reported_by_key_name(resnet18_files, tmp_path):
    state, _ = resnet18_files
    wrong = dict(state)
    del wrong["layer1.0.conv1.weight"]
    wrong["extra.weight"] = torch.zeros(1)
    wrong["layer2.0.conv1.weight"] = torch.zeros(128, 64, 1, 1)
    wrong["fc.weight"] = torch.zeros(7, 512)  # the head may differ: it is rebuilt anyway
    torch.save(wrong, tmp_path / "wrong.pt")
    with pytest.raises(ConvlabError) as err:
        convlab.finetune("torchvision:resnet18", weights=str(tmp_path / "wrong.pt"), data="digits", image_size=32,
                         out=str(tmp_path / "r"), quiet=True)
    message = str(err.value)
    assert "missing: layer1.0.conv1.weight" in message and "unexpected: extra.weight" in message
    assert "layer2.0.conv1.weight (128, 64, 1, 1) vs (128, 64, 3, 3)" in message and "fc." not in message
    assert "\n" not in message
    with pytest.raises(ConvlabError, match=r"missing: .*layer1\.2\.bn1\.bias.* and \d+ more"):  # resnet18 into resnet34
        convlab.finetune("torchvision:resnet34", weights=str(tmp_path / "wrong.pt"), data="digits",
                         image_size=32, out=str(tmp_path / "r2"), quiet=True)


class NotWeights:
    def __reduce__(self):
        return (print, ("this would run at load time",))


def test_a_pt_file_that_holds_more_than_tensors_is_refused(tmp_path):
    with open(tmp_path / "evil.pt", "wb") as handle:
        pickle.dump({"conv1.weight": NotWeights()}, handle)
    torch.save({"model": torch.nn.Linear(2, 2)}, tmp_path / "module.pt")
    for name in ("evil.pt", "module.pt"):
        with pytest.raises(ConvlabError, match=r"was not loaded: besides tensors it holds"):
            read_weights_file(tmp_path / name)
    with pytest.raises(ConvlabError, match=r"--weights .*missing\.pt: no such file"):
        read_weights_file(tmp_path / "missing.pt")


def test_a_checkpoint_dict_and_a_dataparallel_prefix_are_unwrapped(tmp_path):
    torch.save({"state_dict": {"module.fc.weight": torch.ones(2, 2)}, "epoch": 3}, tmp_path / "ckpt.pth")
    assert list(read_weights_file(tmp_path / "ckpt.pth")) == ["fc.weight"]


@pytest.mark.slow
def test_finetune_a_convlab_run_rebuilds_its_head_for_new_classes(digits_run, tmp_path):
    run = convlab.finetune(digits_run.path, data="digits", classes="7,8,9", train_per_class=10,
                           strategy="linear-probe", epochs=2, out=str(tmp_path / "ft"), quiet=True)
    source = digits_run.model.state_dict()
    state = run.model.state_dict()
    assert state["classifier.1.weight"].shape[0] == 3 and source["classifier.1.weight"].shape[0] == 10
    assert torch.equal(state["features.0.weight"].cpu(), source["features.0.weight"].cpu())
    assert run.preprocess.mean == digits_run.preprocess.mean  # the source's normalization
    assert sum(run.metrics["confusion_matrix"][0]) + sum(run.metrics["confusion_matrix"][1]) > 0
    test_labels = convlab.load_dataset("digits").test.labels
    assert run.metrics["num_samples"] == np.isin(test_labels, [7, 8, 9]).sum()  # their test images only
    again = load_run(run.path)
    assert again.evaluate()["accuracy"] == pytest.approx(run.metrics["accuracy"])  # eval keeps --classes
    assert run.metrics["freeze"]["strategy"] == "linear-probe"


def test_finetune_errors_are_one_line(digits_run, tmp_path, capsys):
    assert main(["finetune", "--data", "digits"]) == 2
    assert "finetune needs --from SOURCE" in capsys.readouterr().err
    assert main(["finetune", "--from", str(tmp_path / "nowhere"), "--data", "digits"]) == 2
    assert "not a run folder, torchvision:NAME or timm:NAME" in capsys.readouterr().err
    assert main(["finetune", "--from", str(digits_run.path), "--model", "lenet", "--data", "digits"]) == 2
    assert "--model lenet does not match" in capsys.readouterr().err
    assert main(["finetune", "--from", "torchvision:resnet81"]) == 2
    assert "Did you mean resnet18" in capsys.readouterr().err
    assert main(["finetune", "--from", "torchvision:resnet18", "--weights", "IMAGENET9K"]) == 2
    assert "choose from DEFAULT, IMAGENET1K_V1" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # train has no fine-tuning flags
        main(["train", "--strategy", "full"])
    assert "unrecognized arguments: --strategy" in capsys.readouterr().err
    with pytest.raises(ConvlabError, match="use convlab finetune"):
        convlab.train(source=str(digits_run.path))


@pytest.mark.slow
def test_timm_model_from_a_local_weights_file(tmp_path):
    timm = pytest.importorskip("timm", reason="timm is the optional extra convlab[timm]")
    from safetensors.torch import save_file

    from convlab.models.freeze import family_of, parameter_groups

    torch.manual_seed(0)
    source = timm.create_model("resnet10t", pretrained=False)
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(tmp_path / "r10t.safetensors"))
    run = convlab.finetune("timm:resnet10t", weights=str(tmp_path / "r10t.safetensors"), data="digits",
                           classes="0,1", train_per_class=4, image_size=32, strategy="linear-probe", epochs=1,
                           val_fraction=0.0, out=str(tmp_path / "r"), quiet=True)
    assert family_of(run.model) == "timm"
    assert [g.name for g in parameter_groups(run.model)][:2] == ["stem", "stage1"]
    assert torch.equal(run.model.state_dict()["layer1.0.conv1.weight"], source.state_dict()["layer1.0.conv1.weight"])
    assert run.preprocess.size == [32, 32] and run.preprocess.channels == 3
    loaded = load_run(run.path)
    assert loaded.config.model.name == "timm:resnet10t" and loaded.model.get_classifier().out_features == 2


def test_preprocess_json_of_older_runs_still_loads():
    from convlab.run import Preprocess

    old = {"size": [28, 28], "channels": 1, "mean": [0.13], "std": [0.31], "resize": "bilinear, whole image"}
    pre = Preprocess.from_json(old)
    assert pre.normalization == "training data" and pre.data_channels is None
    assert "data_channels" not in pre.to_json() and "channel_conversion" not in pre.to_json()


@pytest.mark.slow
def test_resuming_a_finetune_restores_the_freeze_state_of_its_stage(digits_run, tmp_path):
    out = tmp_path / "ft"
    first = convlab.finetune(digits_run.path, data="digits", classes="1,2", train_per_class=6, strategy="linear-probe",
                             schedule="none", epochs=1, val_fraction=0.0, out=str(out), quiet=True)
    # no validation split: the run ends with its last epoch's weights, not the best epoch's
    head_after_1 = first.model.state_dict()["classifier.1.weight"].clone()
    (out / "model.safetensors").unlink()  # as if it had stopped after epoch 1
    resumed = convlab.finetune(resume=out, epochs=3, quiet=True)
    source, state = digits_run.model.state_dict(), resumed.model.state_dict()
    assert torch.equal(state["features.0.weight"].cpu(), source["features.0.weight"].cpu())  # still frozen
    assert not torch.equal(state["classifier.1.weight"].cpu(), head_after_1.cpu())  # the head kept training
    assert resumed.metrics["epochs_run"] == 3 and resumed.metrics["freeze"]["trainable"] == ["head"]


@pytest.mark.slow
def test_a_streamed_gray_folder_is_repeated_into_the_rgb_model(resnet18_files, make_image_folder, tmp_path):
    """--loader streaming (what a large folder gets) reads the gray cache as three channels, as memory does."""
    _, folder = resnet18_files
    make_image_folder(tmp_path / "xray", classes=("a", "b"), per_class=10, size=(12, 12), mode="L")
    runs, printed = {}, {}
    for loader in ("streaming", "memory"):
        buffer = io.StringIO()
        runs[loader] = convlab.finetune("torchvision:resnet18", weights=str(folder / "resnet18.pt"),
                                        data=f"imagefolder:{tmp_path / 'xray'}", loader=loader, image_size=32,
                                        strategy="linear-probe", epochs=2, batch_size=8, val_fraction=0.0,
                                        out=str(tmp_path / loader), console=Console(file=buffer, width=300))
        printed[loader] = buffer.getvalue()
    assert "streaming from the decoded-image cache" in printed["streaming"]
    assert "streaming from" not in printed["memory"]
    pre = json.loads((runs["streaming"].path / "preprocess.json").read_text())
    assert pre["channels"] == 3 and pre["data_channels"] == 1
    assert pre["channel_conversion"] == "grayscale repeated into 3 channels"
    assert runs["streaming"].metrics["accuracy"] == runs["memory"].metrics["accuracy"]
    # the streamed rows are the in-memory rows: the gray cache on disk, read as three equal channels
    from convlab.data.run_data import load_run_data

    streamed, in_memory = (load_run_data(runs[loader].config, 3, (32, 32)) for loader in ("streaming", "memory"))
    assert streamed.streamed and streamed.splits.train.images.shape[1:] == (3, 32, 32)
    np.testing.assert_array_equal(streamed.splits.train.images[streamed.train_rows],
                                  in_memory.splits.train.images[in_memory.train_rows])
    np.testing.assert_array_equal(streamed.test.images, in_memory.test.images)
