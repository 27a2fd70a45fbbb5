"""`convlab convert`: any format to any other, checked by a round trip; its summary, warnings and one-line errors."""
import json
import os
import subprocess
import sys

import pytest
from cli_output import assert_one_line_error, run_cli
from shapes_files import BY_HAND, assert_same_targets

from convlab.detection.convert import convert
from convlab.detection.formats import FORMATS, read_detection
from convlab.detection.synthetic import make_shapes


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return make_shapes(tmp_path_factory.mktemp("shapes"), n_train=8, n_test=4, size=56, seed=5, negatives=0.25)


@pytest.fixture
def coco_shapes(shapes, tmp_path):
    BY_HAND["coco"](shapes, tmp_path / "coco")
    return tmp_path / "coco"


def test_coco_to_yolo_to_voc_to_coco_gives_the_same_targets(shapes, coco_shapes, tmp_path):
    source = f"coco:{coco_shapes}"
    for fmt in ("yolo", "voc", "coco"):
        convert(source, fmt, tmp_path / f"as-{fmt}")
        source = f"{fmt}:{tmp_path / f'as-{fmt}'}"
    back = read_detection(source)
    assert_same_targets(back, shapes)
    assert back.split_names == {"train": "train", "test": "test"}
    assert back.issues == back.box_issues == back.notes == []


@pytest.mark.parametrize("to", sorted(FORMATS))
def test_every_format_from_every_other(shapes, tmp_path, to):
    for source in sorted(FORMATS):
        BY_HAND[source](shapes, tmp_path / source)
        convert(f"{source}:{tmp_path / source}", to, tmp_path / f"{source}-to-{to}")
        assert_same_targets(read_detection(f"{to}:{tmp_path / f'{source}-to-{to}'}"), shapes)


def test_a_source_with_one_split_gets_both(shapes, coco_shapes, tmp_path):
    json_file = coco_shapes / "annotations" / "instances_train.json"
    dataset, _ = convert(f"coco:{json_file}", "yolo", tmp_path / "out", seed=2, test_fraction=0.25)
    back = read_detection(f"yolo:{tmp_path / 'out'}")
    assert (len(back.train), len(back.test)) == (6, 2)
    assert [item.path.name for item in back.test] == [item.path.name for item in dataset.test]


def test_cli_writes_hard_links_and_prints_one_summary_line(shapes, coco_shapes, tmp_path, capsys):
    code, out, err = run_cli(capsys, "convert", f"coco:{coco_shapes}", "--to", "yolo", "--out", str(tmp_path / "y"))
    boxes = sum(map(len, shapes.train)), sum(map(len, shapes.test))
    assert code == 0 and err == ""
    assert out == (f"wrote {tmp_path.name} as yolo to {tmp_path / 'y'}: 3 classes, train 8 images / {boxes[0]} boxes, "
                   f"test 4 images / {boxes[1]} boxes\n")
    assert os.path.samefile(tmp_path / "y" / "images" / "train" / "0000.png", coco_shapes / "train" / "0000.png")


def test_cli_names_dropped_boxes_and_skipped_images(coco_shapes, tmp_path, capsys):
    path = coco_shapes / "annotations" / "instances_train.json"
    data = json.loads(path.read_text())
    data["annotations"][0]["bbox"][2] = 0
    path.write_text(json.dumps(data))
    (coco_shapes / "train" / "0001.png").write_bytes(b"garbage")
    code, out, err = run_cli(capsys, "convert", f"coco:{coco_shapes}", "--to", "voc", "--out", str(tmp_path / "v"))
    image = data["images"][[i["id"] for i in data["images"]].index(data["annotations"][0]["image_id"])]["file_name"]
    assert code == 0 and out.strip().endswith("(1 box dropped, 1 image skipped)")
    skipped, dropped = err.splitlines()
    assert skipped == f"warning: {coco_shapes / 'train' / '0001.png'}: skipped: not an image format Pillow knows"
    assert dropped.startswith(f"warning: {path}: box 0 of {coco_shapes / 'train' / image}: zero width: xyxy [")


def test_cli_refuses_a_non_empty_out(coco_shapes, tmp_path, capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    code, _, err = run_cli(capsys, "convert", f"coco:{coco_shapes}", "--to", "voc", "--out", str(tmp_path / "out"))
    assert_one_line_error(code, err, f"--out {tmp_path / 'out'} is not an empty folder")
    assert os.listdir(tmp_path / "out") == ["keep.txt"]


@pytest.mark.parametrize("case", ["unknown format", "missing annotation file", "unknown class id"])
def test_cli_bad_input_is_one_line_naming_it(shapes, tmp_path, capsys, case):
    BY_HAND["yolo"](shapes, tmp_path / "y")
    label = next((tmp_path / "y" / "labels" / "test").glob("*.txt"))
    source, to, named = {"unknown format": (f"yolo:{tmp_path / 'y'}", "kitti", "--to 'kitti'"),
                         "missing annotation file": (f"coco:{tmp_path / 'none.json'}", "voc", str(tmp_path / "none.json")),
                         "unknown class id": (f"yolo:{tmp_path / 'y'}", "coco", f"{label} line 1: class id 7")}[case]
    if case == "unknown class id":
        label.write_text("7 0.5 0.5 0.2 0.2\n")
    code, out, err = run_cli(capsys, "convert", source, "--to", to, "--out", str(tmp_path / "out"))
    assert_one_line_error(code, err, "convlab convert: error: ", named)
    assert out == "" and not (tmp_path / "out").exists()


def test_help_names_every_format(capsys):
    with pytest.raises(SystemExit) as done:
        run_cli(capsys, "convert", "--help")
    text = " ".join(capsys.readouterr().out.split())
    assert done.value.code == 0
    for fmt in FORMATS.values():
        assert fmt.spec.split(" or ")[0] in text
        assert fmt.name in text.split("--to FORMAT")[-1]


@pytest.mark.slow
def test_help_and_a_bad_flag_do_not_import_numpy():
    script = ("import sys, runpy\nfor argv in (['convert', '--help'], ['convert', 'x']):\n"
              "    sys.argv = ['convlab', *argv]\n    try: runpy.run_module('convlab', run_name='__main__')\n"
              "    except SystemExit as exit: print(exit.code)\nprint('numpy' in sys.modules, 'PIL' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert done.stdout.strip().splitlines()[-3:] == ["0", "2", "False False"]
