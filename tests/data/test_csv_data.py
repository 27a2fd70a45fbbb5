"""CSV datasets: columns by header name, one label or several per row, split column, IMAGES_DIR and errors."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
from PIL import Image

from convlab.data import load_dataset
from convlab.data.csv_table import infer_csv_task
from convlab.data.registry import DATASETS
from convlab.errors import ConvlabError

COLOURS = {"cat": (255, 0, 0), "dog": (0, 255, 0), "owl": (0, 0, 255)}


def _png(path, colour=(128, 128, 128), mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, (6, 4), colour if mode == "RGB" else colour[0]).save(path)
    return path


def _csv(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _single_label(tmp_path, per_class=5, header="path,label"):
    """A CSV beside img/ with per_class solid-colour images of cat, dog and owl (rows in class order)."""
    lines = [header]
    for name, colour in COLOURS.items():
        for i in range(per_class):
            _png(tmp_path / "img" / f"{name}{i}.png", colour)
            lines.append(f"img/{name}{i}.png,{name}")
    return _csv(tmp_path / "data.csv", "\n".join(lines) + "\n")


def _load(spec, task=None, image_size=8):
    return DATASETS["csv"].for_task(task).loader(None, spec, image_size)


def _raises(spec, *fragments, task=None):
    """The load fails with a ConvlabError whose one-line message holds every fragment."""
    with pytest.raises(ConvlabError) as caught:
        _load(spec, task)
    message = str(caught.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


def test_single_label_loads_classes_labels_and_holds_out_a_test_split(tmp_path):
    file = _single_label(tmp_path)
    splits = load_dataset(f"csv:{file}", image_size=8)
    assert splits.name == "csv" and splits.hflip
    assert splits.classes == ["cat", "dog", "owl"]
    assert splits.shape == (3, 8, 8)
    assert splits.train.labels.dtype == np.int64 and splits.train.labels.ndim == 1
    assert len(splits.train) == 12 and len(splits.test) == 3
    assert np.bincount(splits.test.labels).tolist() == [1, 1, 1]  # stratified
    for part in (splits.train, splits.test):
        for image, label in zip(part.images, part.labels):
            assert tuple(image[:, 0, 0]) == COLOURS[splits.classes[label]]
    assert any("holding out" in note and "20%" in note for note in splits.notes)
    assert splits.issues == []


def test_header_names_are_case_insensitive_and_grayscale_gives_one_channel(tmp_path):
    lines = ["Label,Extra,IMAGE"]
    for i in range(4):
        _png(tmp_path / f"g{i}.png", (40 * i,), mode="L")
        lines.append(f"{'ab'[i % 2]},x,g{i}.png")
    file = _csv(tmp_path / "gray.csv", "\n".join(lines))
    splits = _load(str(file), image_size=None)
    assert splits.shape == (1, 64, 64)  # DEFAULT_FOLDER_SIZE without --image-size
    assert splits.classes == ["a", "b"]


def test_split_column_is_honoured_and_val_rows_are_trained_on(tmp_path):
    rows = ["path,label,split"]
    marks = {"cat": ["train", "val", "test"], "dog": ["Train", "validation", "TEST"]}
    for name, splits_of in marks.items():
        for i, mark in enumerate(splits_of):
            _png(tmp_path / f"{name}{i}.png", COLOURS[name])
            rows.append(f"{name}{i}.png,{name},{mark}")
    splits = _load(str(_csv(tmp_path / "s.csv", "\n".join(rows))))
    assert splits.train.labels.tolist() == [0, 0, 1, 1]
    assert splits.test.labels.tolist() == [0, 1]
    assert tuple(splits.test.images[1][:, 0, 0]) == COLOURS["dog"]
    assert any("marked val" in note and "--val-fraction" in note for note in splits.notes)
    assert not any("holding out" in note for note in splits.notes)


def test_multilabel_rows_become_multi_hot(tmp_path):
    cells = ["cat dog", "owl", "cat;owl", " dog ;  owl ", "cat", "dog", "cat  dog;owl", "owl;"]
    for i in range(len(cells)):
        _png(tmp_path / "im" / f"{i}.png")
    text = "file,tags,split\n" + "".join(f'im/{i}.png,"{cell}",{"test" if i == 7 else "train"}\n'
                                         for i, cell in enumerate(cells))
    file = _csv(tmp_path / "multi.csv", text)
    splits = DATASETS["csv"].for_task("multilabel").loader(None, str(file), 8)
    assert splits.classes == ["cat", "dog", "owl"]
    assert splits.train.labels.dtype == np.uint8 and splits.train.labels.shape == (7, 3)
    assert splits.train.labels.tolist() == [[1, 1, 0], [0, 0, 1], [1, 0, 1], [0, 1, 1], [1, 0, 0], [0, 1, 0],
                                            [1, 1, 1]]
    assert splits.test.labels.tolist() == [[0, 0, 1]]


def test_multilabel_without_split_holds_out_a_seeded_share(tmp_path):
    lines = ["path,labels"]
    for i in range(10):
        _png(tmp_path / f"{i}.png", (i * 20, 0, 0))
        lines.append(f"{i}.png,a b" if i % 2 else f"{i}.png,a")
    file = _csv(tmp_path / "m.csv", "\n".join(lines))
    first = _load(str(file), "multilabel")
    again = _load(str(file), "multilabel")
    assert len(first.train) == 8 and len(first.test) == 2
    np.testing.assert_array_equal(first.test.images, again.test.images)
    assert any("seeded random 20%" in note for note in first.notes)


def test_infer_task_reads_the_labels_only(tmp_path):
    single = _csv(tmp_path / "one.csv", "path,label\nmissing1.png,cat\nmissing2.png,dog\n")
    multi = _csv(tmp_path / "two.csv", "path,label\nmissing1.png,cat\nmissing2.png,cat;dog\n")
    assert infer_csv_task(str(single)) == "classify"  # the images do not exist: they are not looked at
    assert infer_csv_task(str(multi)) == "multilabel"
    entry = DATASETS["csv"]
    assert entry.task_for(str(multi)) == "multilabel" and entry.task_for(str(single)) == "classify"
    for reader in (infer_csv_task, lambda arg: _load(arg)):
        with pytest.raises(ConvlabError, match=r"CSV file .*nothere\.csv does not exist"):
            reader(str(tmp_path / "nothere.csv"))


def test_classify_refuses_a_multilabel_file(tmp_path):
    file = _csv(tmp_path / "tags.csv", "path,label\na.png,cat\nb.png,cat dog\n")
    message = _raises(str(file), "tags.csv", "line 3", "cat dog", "multi-label", "--task classify", "--multi-label")
    assert "leave out --task classify" in message


def test_images_dir_resolves_paths(tmp_path):
    for name in ("x", "y"):
        for i in range(3):
            _png(tmp_path / "pics" / name / f"{i}.png", COLOURS["cat" if name == "x" else "dog"])
    lines = ["path,label"] + [f"{name}/{i}.png,{name}" for name in ("x", "y") for i in range(3)]
    lines.append(f"{tmp_path / 'pics' / 'x' / '0.png'},x")  # an absolute path is taken as it is
    file = _csv(tmp_path / "tables" / "list.csv", "\n".join(lines))
    splits = _load(f"{file},{tmp_path / 'pics'}")
    assert len(splits.train) + len(splits.test) == 7
    _raises(str(file), "list.csv", "line 2", "x/0.png", "the CSV's folder", "IMAGES_DIR", "5 more")
    _raises(f"{file},{tmp_path}", "list.csv", "line 2", "x/0.png", f"IMAGES_DIR {tmp_path}")
    _raises(f"{file},{tmp_path / 'nowhere'}", "nowhere", "not a folder")


def test_corrupt_image_is_skipped_into_issues(tmp_path):
    file = _single_label(tmp_path, per_class=4)
    broken = tmp_path / "img" / "dog2.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n but then nothing")
    (tmp_path / "img" / "owl1.png").write_bytes(b"")
    splits = _load(str(file))
    assert len(splits.train) + len(splits.test) == 10
    assert [issue["path"] for issue in splits.issues] == [str(broken), str(tmp_path / "img" / "owl1.png")]


def test_a_class_whose_images_are_all_unreadable_is_an_error(tmp_path):
    file = _single_label(tmp_path, per_class=2)
    for i in range(2):
        (tmp_path / "img" / f"owl{i}.png").write_bytes(b"not pixels")
    _raises(str(file), "data.csv", "line 6", "'owl'", "owl0.png")


ERRORS = {  # name -> (CSV text, fragments the message must hold)
    "empty": ("", ["bad.csv", "is empty", "header"]),
    "blank lines only": ("\n\n", ["bad.csv", "is empty"]),
    "no path column": ("picture,label\na.png,cat\n", ["bad.csv", "line 1", "picture, label", "path, image, file"]),
    "no label column": ("path,kind\na.png,cat\n", ["bad.csv", "line 1", "path, kind", "labels, label, tags"]),
    "header only": ("path,label\n", ["bad.csv", "no rows"]),
    "empty label": ("path,label\na.png,cat\nb.png,\n", ["bad.csv", "line 3", "b.png", "label cell"]),
    "separators only": ("path,label\na.png,cat\nb.png,\" ; \"\n", ["bad.csv", "line 3", "b.png"]),
    "empty path": ("path,label\na.png,cat\n,dog\n", ["bad.csv", "line 3", "path cell is empty"]),
    "unknown split": ("path,label,split\na.png,cat,train\nb.png,dog,holdout\n",
                      ["bad.csv", "line 3", "'holdout'", "train, val, valid, validation, test"]),
    "one class": ("path,label\na.png,cat\nb.png,cat\n", ["bad.csv", "line 2", "'cat'", "at least 2 classes"]),
    "missing image": ("path,label\nthere.png,cat\nnot-there.png,dog\n", ["bad.csv", "line 3", "not-there.png",
                                                                          "the CSV's folder"]),
    "all test": ("path,label,split\nthere.png,cat,test\nthere.png,dog,test\n", ["bad.csv", "every row", "test"]),
}


@pytest.mark.parametrize("name", list(ERRORS))
def test_errors_name_the_file_the_line_and_the_value(tmp_path, name):
    text, fragments = ERRORS[name]
    _png(tmp_path / "there.png")
    _raises(str(_csv(tmp_path / "bad.csv", text)), *fragments)


def test_missing_file_and_a_folder_are_refused(tmp_path):
    _raises(str(tmp_path / "absent.csv"), "absent.csv", "does not exist or is not a file")
    _raises(str(tmp_path), str(tmp_path), "not a file")


def test_a_line_number_counts_the_header_and_blank_lines(tmp_path):
    file = _csv(tmp_path / "gaps.csv", "path,label\n\na.png,cat\n\nb.png,\n")
    message = _raises(str(file), "gaps.csv")
    assert re.search(r"line 5\b", message)


@pytest.mark.slow
def test_train_on_a_csv_writes_its_classes(tmp_path):
    from convlab import train

    file = _single_label(tmp_path / "data", per_class=6)
    run = train(data=f"csv:{file}", model="small-cnn", epochs=1, image_size=16, threads=1, batch_size=4,
                out=str(tmp_path / "run"), quiet=True)
    assert json.loads((run.path / "labels.json").read_text()) == ["cat", "dog", "owl"]
    assert run.metrics["epochs_run"] == 1
