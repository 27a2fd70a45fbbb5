"""The malformed-input corpus: broken images in a folder are skipped (named, counted, written to the run
folder) or stop the run under --strict; broken IDX and CIFAR files give an error naming file and fault."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from convlab.cli import main
from convlab.data import load_dataset
from convlab.data.cifar import read_cifar10
from convlab.data.idx import read_idx, write_idx
from convlab.data.imagefolder import load_image_folder
from convlab.errors import ConvlabError


def _png(image: Image.Image, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **params)
    return buffer.getvalue()


def _jpeg(size=(16, 16)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (10, 200, 30)).save(buffer, format="JPEG")
    return buffer.getvalue()


GOOD_PNG = _png(Image.new("RGB", (16, 16), (200, 40, 40)))

# file name -> (bytes, what the warning says). Each must be skipped, not crash the run.
BROKEN = {
    "zero-byte.png": (b"", "not an image format Pillow knows"),
    "text-named-png.png": (b"just some notes, not pixels\n" * 4, "not an image format Pillow knows"),
    "html-named-jpg.jpg": (b"<html><body>404 Not Found</body></html>", "not an image format Pillow knows"),
    "truncated.png": (GOOD_PNG[: len(GOOD_PNG) // 2], ""),
    "truncated.jpg": (_jpeg((64, 64))[:300], ""),
    "header-only.png": (GOOD_PNG[:33], ""),
    "corrupt-body.png": (GOOD_PNG[:40] + bytes(len(GOOD_PNG) - 40), ""),
    "bomb.png": (_png(Image.new("L", (400, 400), 0)), "decompression bomb"),
}
# Odd but sane modes: converted, never skipped.
ODD = {
    "i16.png": _png(Image.new("I;16", (16, 16), 40000)),
    "cmyk.jpg": (lambda: (lambda b: (Image.new("CMYK", (16, 16), (0, 50, 90, 10)).save(b, "JPEG"), b.getvalue())[1])(
        io.BytesIO()))(),
    "palette-transparent.png": _png(Image.new("P", (16, 16), 0), transparency=0),
    "la.png": _png(Image.new("LA", (16, 16), (90, 200))),
    "one-bit.png": _png(Image.new("1", (16, 16), 1)),
    "rgba.png": _png(Image.new("RGBA", (16, 16), (1, 2, 3, 100))),
}


@pytest.fixture
def messy_folder(tmp_path, monkeypatch):
    """Two classes of good images; class 'b' also holds the whole broken corpus and the odd modes."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100_000)  # 400 x 400 = 160,000 pixels is a "bomb"
    root = tmp_path / "photos"
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        for i in range(6):
            (root / name / f"good{i}.png").write_bytes(GOOD_PNG)
    for name, (content, _) in BROKEN.items():
        (root / "b" / name).write_bytes(content)
    for name, content in ODD.items():
        (root / "b" / name).write_bytes(content)
    return root


def test_broken_images_are_skipped_and_named(messy_folder):
    splits = load_image_folder(messy_folder, 8)
    skipped = {issue["path"].rsplit("/", 1)[-1]: issue["problem"] for issue in splits.issues}
    assert set(skipped) == set(BROKEN)
    for name, (_, fragment) in BROKEN.items():
        assert fragment in skipped[name]
    assert len(splits.train) + len(splits.test) == 12 + len(ODD)


def test_strict_stops_at_the_first_broken_image(messy_folder):
    with pytest.raises(ConvlabError, match=r"cannot read image .*photos/b/\S+: "):
        load_image_folder(messy_folder, 8, strict=True)
    with pytest.raises(ConvlabError, match=r"--strict stops at the first unreadable file"):
        load_dataset(f"imagefolder:{messy_folder}", image_size=8, strict=True)


def test_training_warns_per_file_and_writes_data_issues(messy_folder, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--data", f"imagefolder:{messy_folder}", "--model", "tiny-cnn", "--image-size", "8",
                 "--epochs", "1", "--out", str(out), "--quiet"])
    printed = capsys.readouterr().out
    assert code == 0
    for name in BROKEN:
        assert f"warning: skipped {messy_folder / 'b' / name}: " in printed
    assert f"{len(BROKEN)} unreadable images skipped" in printed
    issues = json.loads((out / "data_issues.json").read_text())
    assert issues["skipped"] == len(BROKEN) and len(issues["files"]) == len(BROKEN)
    code = main(["train", "--data", f"imagefolder:{messy_folder}", "--model", "tiny-cnn", "--image-size", "8",
                 "--epochs", "1", "--out", str(tmp_path / "strict"), "--quiet", "--strict"])
    assert code == 2
    assert "cannot read image" in capsys.readouterr().err


def test_a_class_with_only_broken_images_is_an_error(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    (tmp_path / "a" / "ok.png").write_bytes(GOOD_PNG)
    (tmp_path / "a" / "ok2.png").write_bytes(GOOD_PNG)
    (tmp_path / "b" / "bad.png").write_bytes(b"")
    with pytest.raises(ConvlabError, match=r"class folder .*/b: none of its images could be read"):
        load_image_folder(tmp_path, 8)


# --- IDX and CIFAR --------------------------------------------------------------------------------

def _idx_bytes(array) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    return header + array.astype(np.uint8).tobytes()


IMAGES = _idx_bytes(np.zeros((4, 28, 28)))
IDX_CORPUS = {
    "wrong magic": (b"\x12\x34" + IMAGES[2:], "not an IDX file (magic bytes"),
    "unknown type code": (IMAGES[:2] + b"\x07" + IMAGES[3:], "unknown IDX type code 0x07"),
    "zero dimensions": (b"\x00\x00\x08\x00", "0 dimensions"),
    "truncated header": (IMAGES[:9], "truncated IDX header"),
    "truncated body": (IMAGES[:-100], "truncated IDX body"),
    "extra bytes": (IMAGES + b"\x00" * 7, "7 extra bytes"),
    "empty": (b"", "the file is empty"),
    "cut-off gzip": (b"\x1f\x8b\x08\x00" + b"\x00" * 6 + b"\x01\x02", "damaged gzip data"),
}


@pytest.mark.parametrize("case", IDX_CORPUS)
def test_idx_corpus(tmp_path, case):
    content, fragment = IDX_CORPUS[case]
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(content)
    with pytest.raises(ConvlabError, match=str(path)) as err:
        read_idx(path)
    assert fragment in str(err.value)


def test_idx_count_mismatch_names_both_files(tmp_path):
    folder = tmp_path / "mnist"
    folder.mkdir()
    names = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
    for name, array in zip(names, [np.zeros((5, 28, 28), np.uint8), np.zeros(4, np.uint8),
                                   np.zeros((2, 28, 28), np.uint8), np.zeros(2, np.uint8)]):
        write_idx(folder / name, array)
    with pytest.raises(ConvlabError, match=r"holds 5 images but .*train-labels-idx1-ubyte holds 4 labels"):
        load_dataset("mnist", folder)


@pytest.mark.parametrize("case, mutate, fragment", [
    ("truncated batch", lambda b: b[: len(b) // 2], "not a readable CIFAR-10 batch"),
    ("empty batch", lambda b: b"", "not a readable CIFAR-10 batch"),
    ("wrong magic", lambda b: b"\x00\x01\x02" + b[3:], "not a readable CIFAR-10 batch"),
])
def test_cifar_corpus(tmp_path, write_cifar, case, mutate, fragment):
    batches = write_cifar(tmp_path)["batches"]
    target = batches / "data_batch_3"
    target.write_bytes(mutate(target.read_bytes()))
    with pytest.raises(ConvlabError, match=str(target)) as err:
        read_cifar10(batches)
    assert fragment in str(err.value)


def test_cifar_count_mismatch(tmp_path, write_cifar):
    import pickle

    batches = write_cifar(tmp_path)["batches"]
    batch = pickle.loads((batches / "test_batch").read_bytes(), encoding="bytes")
    batch[b"labels"] = batch[b"labels"][:-1]
    (batches / "test_batch").write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(ConvlabError, match=r"test_batch: 6 images but 5 labels"):
        read_cifar10(batches)
