"""--classes keeps what the loader reported: the unreadable files it skipped (data_issues.json) and its notes."""
from __future__ import annotations

import json

import numpy as np

from convlab.data.arrays import ImageArrays, Splits
from convlab.data.subsets import keep_classes, select_subset


def _splits_with_issues():
    labels = np.repeat(np.arange(3), 4)
    images = np.arange(12, dtype=np.uint8).reshape(12, 1, 1, 1)
    issues = [{"path": "photos/a/broken.png", "problem": "not an image format Pillow knows"}]
    return Splits("toy", ImageArrays(images, labels), ImageArrays(images, labels), ["a", "b", "c"],
                  notes=["3 classes found"], issues=issues)


def test_keep_classes_keeps_the_skipped_files_and_the_notes():
    splits = _splits_with_issues()
    kept = keep_classes(splits, ["c", "a"])
    assert kept.issues == [{"path": "photos/a/broken.png", "problem": "not an image format Pillow knows"}]
    assert kept.notes == ["3 classes found"]
    kept.issues.append({"path": "x", "problem": "y"})  # a copy: the loader's splits are not changed through it
    assert len(splits.issues) == 1


def test_select_subset_with_classes_and_per_class_keeps_them_too():
    kept = select_subset(_splits_with_issues(), "a,b", 2, seed=0)
    assert [issue["path"] for issue in kept.issues] == ["photos/a/broken.png"]


def test_training_on_some_classes_writes_data_issues_naming_the_broken_file(tmp_path, make_image_folder):
    from convlab import train

    root = make_image_folder(tmp_path / "photos", per_class=6)
    broken = root / "cat" / "broken.png"
    broken.write_bytes(b"not pixels at all")
    run = train(data=f"imagefolder:{root}", classes="cat,dog", epochs=1, out=str(tmp_path / "run"), quiet=True,
                model="tiny-cnn")
    issues = json.loads((run.path / "data_issues.json").read_text())
    assert issues["skipped"] == 1
    assert [item["path"] for item in issues["files"]] == [str(broken)]
