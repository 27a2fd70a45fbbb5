"""Image decoding across PIL modes, and folder-per-class datasets: layouts, splits and errors."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from convlab.data import load_dataset
from convlab.data.imagefolder import DEFAULT_FOLDER_SIZE, list_images, load_image, load_image_folder
from convlab.errors import ConvlabError

RGB = (200, 100, 50)
GRAY_OF_RGB = 124  # ITU-R 601 luma of RGB, as PIL computes it


def _palette(colour, transparent=False):
    image = Image.new("P", (5, 3), 0)
    image.putpalette(list(colour) + [0] * 765)
    if transparent:
        image.info["transparency"] = 0
    return image


def _over_white(value, alpha):
    return round(value * alpha / 255 + 255 * (1 - alpha / 255))


# mode -> (a solid image in that mode, expected RGB after conversion, expected gray)
MODES = {
    "L": (Image.new("L", (5, 3), 120), (120,) * 3, 120),
    "LA": (Image.new("LA", (5, 3), (120, 128)), (_over_white(120, 128),) * 3, _over_white(120, 128)),
    "LA-transparent": (Image.new("LA", (5, 3), (0, 0)), (255,) * 3, 255),
    "RGB": (Image.new("RGB", (5, 3), RGB), RGB, GRAY_OF_RGB),
    "RGBA-opaque": (Image.new("RGBA", (5, 3), RGB + (255,)), RGB, GRAY_OF_RGB),
    "RGBA-half": (Image.new("RGBA", (5, 3), RGB + (128,)), tuple(_over_white(v, 128) for v in RGB), None),
    "RGBA-transparent": (Image.new("RGBA", (5, 3), (0, 0, 0, 0)), (255,) * 3, 255),
    "P": (_palette(RGB), RGB, GRAY_OF_RGB),
    "P-transparent": (_palette(RGB, transparent=True), (255,) * 3, 255),
    "CMYK": (Image.new("CMYK", (5, 3), (55, 155, 205, 0)), RGB, GRAY_OF_RGB),
    "I;16": (Image.new("I;16", (5, 3), 200 * 257), (200,) * 3, 200),
    "I": (Image.new("I", (5, 3), 100 * 257), (100,) * 3, 100),
    "F": (Image.new("F", (5, 3), 0.2), (51,) * 3, 51),
    "1": (Image.new("1", (5, 3), 1), (255,) * 3, 255),
}


@pytest.mark.parametrize("key", list(MODES))
def test_every_mode_to_3_and_1_channels(key):
    image, rgb, gray = MODES[key]
    three = load_image(image, 3, (3, 5))
    assert three.shape == (3, 3, 5) and three.dtype == np.uint8
    np.testing.assert_array_equal(three[:, 1, 2], rgb)
    one = load_image(image, 1, (3, 5))
    assert one.shape == (1, 3, 5) and one.dtype == np.uint8
    expected_gray = gray if gray is not None else Image.new("RGB", (1, 1), rgb).convert("L").getpixel((0, 0))
    assert abs(int(one[0, 1, 2]) - expected_gray) <= 1


@pytest.mark.parametrize("key, suffix", [("L", ".png"), ("LA", ".png"), ("RGBA-half", ".png"), ("P", ".gif"),
                                         ("P-transparent", ".png"), ("I;16", ".png"), ("CMYK", ".tiff"),
                                         ("RGB", ".bmp"), ("F", ".tif")])
def test_modes_survive_files(tmp_path, key, suffix):
    image, rgb, _ = MODES[key]
    path = tmp_path / f"solid{suffix}"
    image.save(path)
    np.testing.assert_array_equal(load_image(path, 3, 4)[:, 0, 0], rgb)


def test_resize_squashes_to_height_width():
    image = Image.new("RGB", (40, 10), RGB)
    out = load_image(image, 3, (8, 16))
    assert out.shape == (3, 8, 16)
    assert (out == np.array(RGB, np.uint8)[:, None, None]).all()
    assert load_image(image, 1, 6).shape == (1, 6, 6)


def test_resize_is_antialiased():
    stripes = np.zeros((64, 64), np.uint8)
    stripes[:, ::2] = 255  # 1-pixel stripes average to mid-gray when shrunk 8x
    out = load_image(stripes, 1, 8)
    interior = out[:, :, 1:-1].astype(int)  # the border columns see the edge clamp
    assert np.all(np.abs(interior - 128) <= 2)


def test_numpy_inputs():
    gray = np.full((4, 6), 77, np.uint8)
    np.testing.assert_array_equal(load_image(gray, 1, (4, 6)), gray[None])
    floats = np.zeros((4, 6, 3), np.float32)
    floats[..., 0] = 1.0
    floats[..., 1] = 0.5
    out = load_image(floats, 3, (4, 6))
    assert tuple(out[:, 0, 0]) == (255, 128, 0)
    with pytest.raises(ConvlabError, match="int64"):
        load_image(np.zeros((4, 4), np.int64), 1, 4)
    with pytest.raises(ConvlabError, match="shape"):
        load_image(np.zeros((4, 4, 5), np.uint8), 1, 4)


def test_unreadable_file_is_named(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n but then nothing")
    with pytest.raises(ConvlabError, match=r"cannot read image .*broken\.png"):
        load_image(bad, 3, 8)
    with pytest.raises(ConvlabError, match=r"cannot read image .*missing\.jpg"):
        load_image(tmp_path / "missing.jpg", 3, 8)


def test_list_images_sorted_filtered(tmp_path):
    for name in ["b.png", "a.JPG", "notes.txt", ".hidden.png", "._a.jpg", "sub/c.webp"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    assert [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path)] == ["a.JPG", "b.png", "sub/c.webp"]


# --- folders ------------------------------------------------------------------------------

CLASS_LOOKS = {  # class -> (mode, colour, file suffix): mixed modes, sizes and formats
    "apple": ("RGB", (255, 0, 0), ".png"),
    "banana": ("RGBA", (255, 255, 0, 255), ".png"),
    "cherry": ("P", None, ".gif"),
}
SIZES = [(10, 12), (20, 8), (7, 7), (31, 15), (16, 16)]


def _make_class(folder, mode, colour, suffix, count, offset=0):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        size = SIZES[(i + offset) % len(SIZES)]
        image = _palette((128, 0, 128)).resize(size) if mode == "P" else Image.new(mode, size, colour)
        image.save(folder / f"img{i:02d}{suffix}")


def _make_folder(root, count, classes=CLASS_LOOKS):
    for name, (mode, colour, suffix) in classes.items():
        _make_class(root / name, mode, colour, suffix, count)
    (root / "apple" / "README.txt").write_text("not an image, ignored")


def test_flat_layout_stratified_split(tmp_path):
    _make_folder(tmp_path, 10)
    splits = load_image_folder(tmp_path, None)
    assert splits.classes == ["apple", "banana", "cherry"]
    assert splits.shape == (3, DEFAULT_FOLDER_SIZE, DEFAULT_FOLDER_SIZE)
    assert len(splits.train) == 24 and len(splits.test) == 6
    assert np.bincount(splits.test.labels).tolist() == [2, 2, 2]
    assert np.bincount(splits.train.labels).tolist() == [8, 8, 8]
    assert splits.hflip
    colours = {0: (255, 0, 0), 1: (255, 255, 0), 2: (128, 0, 128)}
    for images, labels in [(splits.train.images, splits.train.labels), (splits.test.images, splits.test.labels)]:
        for image, label in zip(images, labels):
            np.testing.assert_array_equal(image[:, 5, 5], colours[int(label)])
    again = load_image_folder(tmp_path, None)
    np.testing.assert_array_equal(again.test.labels, splits.test.labels)
    np.testing.assert_array_equal(again.test.images, splits.test.images)


def test_train_val_layout(tmp_path):
    _make_folder(tmp_path / "train", 4)
    _make_folder(tmp_path / "val", 2, classes={k: CLASS_LOOKS[k] for k in ("apple", "cherry")})
    splits = load_image_folder(tmp_path, 16)
    assert splits.shape == (3, 16, 16)
    assert len(splits.train) == 12 and len(splits.test) == 4
    assert splits.test.labels.tolist() == [0, 0, 2, 2]  # banana missing from val is fine


def test_test_folder_preferred_over_val(tmp_path):
    _make_folder(tmp_path / "train", 3)
    _make_folder(tmp_path / "test", 1)
    _make_folder(tmp_path / "val", 2)
    splits = load_image_folder(tmp_path, 8)
    assert len(splits.test) == 3
    assert any(f"{tmp_path / 'val'} is not read" in note for note in splits.notes)  # never dropped silently


def test_train_only_holds_out_part_of_train(tmp_path):
    _make_folder(tmp_path / "train", 5)
    splits = load_image_folder(tmp_path, 8)
    assert len(splits.train) + len(splits.test) == 15
    assert np.bincount(splits.test.labels).tolist() == [1, 1, 1]


def test_grayscale_folder_gives_one_channel(tmp_path):
    _make_class(tmp_path / "dark", "L", 30, ".png", 3)
    _make_class(tmp_path / "light", "I;16", 220 * 257, ".png", 3)
    splits = load_image_folder(tmp_path, 12)
    assert splits.shape == (1, 12, 12)
    all_images = np.concatenate([splits.train.images, splits.test.images])
    all_labels = np.concatenate([splits.train.labels, splits.test.labels])
    assert set(all_images[all_labels == 0].ravel().tolist()) == {30}
    assert set(all_images[all_labels == 1].ravel().tolist()) == {220}


def test_one_colour_image_makes_three_channels(tmp_path):
    _make_class(tmp_path / "a", "L", 30, ".png", 3)
    _make_class(tmp_path / "b", "L", 90, ".png", 2)
    _make_class(tmp_path / "b", "RGB", (90, 90, 90), ".jpg", 1)
    assert load_image_folder(tmp_path, 8).shape == (3, 8, 8)


def test_registered_with_relative_path_under_data_dir(tmp_path, monkeypatch):
    _make_folder(tmp_path / "photos", 5)
    monkeypatch.chdir(tmp_path / "photos")  # so "photos" is not found relative to the working dir
    splits = load_dataset("imagefolder:photos", data_dir=tmp_path, image_size=8)
    assert splits.shape == (3, 8, 8) and splits.num_classes == 3


@pytest.mark.parametrize("setup, message", [
    (lambda root: None, r"image folder .*nothere does not exist"),
    (lambda root: root.write_text("x"), r"image folder .*nothere does not exist or is not a folder"),
    (lambda root: root.mkdir(), r"no class folders in .*nothere"),
])
def test_root_errors(tmp_path, setup, message):
    root = tmp_path / "nothere"
    setup(root)
    with pytest.raises(ConvlabError, match=message):
        load_image_folder(root, 8)


def test_empty_class_folder_is_named(tmp_path):
    _make_folder(tmp_path, 2)
    (tmp_path / "durian").mkdir()
    (tmp_path / "durian" / "list.csv").write_text("a,b")
    with pytest.raises(ConvlabError, match=r"class folder .*durian holds no images \(\.png"):
        load_image_folder(tmp_path, 8)


def test_single_class(tmp_path):
    _make_class(tmp_path / "only", "RGB", RGB, ".png", 3)
    with pytest.raises(ConvlabError, match="only one class folder \\(only\\).*at least 2"):
        load_image_folder(tmp_path, 8)


def test_unknown_test_class(tmp_path):
    _make_folder(tmp_path / "train", 2)
    _make_class(tmp_path / "test" / "zucchini", "RGB", RGB, ".png", 1)
    with pytest.raises(ConvlabError, match=r"zucchini is not one of the classes"):
        load_image_folder(tmp_path, 8)


def test_unreadable_image_in_folder_is_named(tmp_path):
    _make_folder(tmp_path, 2)
    (tmp_path / "banana" / "corrupt.jpg").write_bytes(b"definitely not a jpeg")
    with pytest.raises(ConvlabError, match=r"cannot read image .*banana/corrupt\.jpg"):
        load_image_folder(tmp_path, 8, strict=True)
    skipped = load_image_folder(tmp_path, 8).issues  # without strict: skipped and listed
    assert [issue["path"] for issue in skipped] == [str(tmp_path / "banana" / "corrupt.jpg")]


def test_progress_bar_on_a_terminal(tmp_path, monkeypatch, fake_terminal):
    from convlab.data import imagefolder

    _make_folder(tmp_path, 3)
    monkeypatch.setattr(imagefolder, "PROGRESS_MIN_IMAGES", 1)
    with fake_terminal() as terminal:
        assert len(load_image_folder(tmp_path, 8).train) == 7
    assert "decoding images" in terminal.getvalue()


def test_no_progress_bar_off_a_terminal(tmp_path, monkeypatch, capsys):
    from convlab.data import imagefolder

    _make_folder(tmp_path, 3)
    monkeypatch.setattr(imagefolder, "PROGRESS_MIN_IMAGES", 1)
    load_image_folder(tmp_path, 8)
    assert capsys.readouterr().err == ""
