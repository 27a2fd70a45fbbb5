"""A segmentation run served: /predict's masks (palette PNG by default, COCO RLE with ?mask=rle, the
parameter checked; sliding windows with tile and overlap), OIP's class_map and shape tensors and their
metadata, the ONNX backend refused by name, in process (TestClient); a real server driven by tritonclient."""
from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from .conftest import running_server

pytestmark = pytest.mark.slow  # the module's run trains for ~15 s

OIP_OUTPUTS = [{"name": "class_map", "datatype": "UINT8", "shape": [-1]},
               {"name": "shape", "datatype": "INT64", "shape": [-1, 2]}]


@pytest.fixture(scope="module")
def mask_run(tmp_path_factory):
    from .segmentation_run import trained_mask_run

    return trained_mask_run(tmp_path_factory.mktemp("mask-run"))


@pytest.fixture(scope="module")
def mask_pngs(tmp_path_factory):
    """Generated shape images the run did not train on, and one of another size (80 wide, 96 high)."""
    from .segmentation_run import fresh_masks

    paths = [item.path for item in fresh_masks(tmp_path_factory.mktemp("mask-pngs"))]
    odd = paths[0].with_name("odd.png")
    Image.open(paths[0]).convert("RGB").resize((80, 96), Image.BILINEAR).save(odd)
    return [*paths, odd]


@pytest.fixture
def seg_client(make_client, mask_run, served):
    from convlab.serve.served import load_served

    segmenter = load_served("masks", mask_run.path)
    return lambda **settings: make_client({"masks": segmenter, "digits": served}, **settings)


def expected_maps(run, paths) -> list[np.ndarray]:
    from convlab.segmentation.images import read_image

    return [run.segment(*read_image(path)) for path in paths]


def multipart(paths) -> list:
    return [("file", (path.name, path.read_bytes(), "image/png")) for path in paths]


def png_of(answer: dict) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(answer["mask"])))


def test_predict_answers_the_runs_class_maps_as_palette_pngs(seg_client, mask_run, mask_pngs):
    from convlab.segmentation.figures import PALETTE

    client = seg_client()
    answer = client.post("/predict/masks", files=multipart(mask_pngs))
    assert answer.status_code == 200, answer.text
    expected = mask_run.predict(mask_pngs)
    assert [a["path"] for a in answer.json()] == [p.name for p in mask_pngs]
    assert any(len(a["pixels"]) > 1 for a in answer.json())  # the run finds shapes, not only background
    for got, wanted in zip(answer.json(), expected):
        assert set(got) == {"path", "width", "height", "pixels", "mask"}
        assert (got["width"], got["height"]) == (wanted["width"], wanted["height"])
        assert got["pixels"] == wanted["pixels"] and sum(got["pixels"].values()) == got["width"] * got["height"]
        png = png_of(got)
        assert png.mode == "P" and np.array_equal(np.asarray(png), wanted["mask"])
        assert np.array_equal(np.asarray(png.getpalette(), np.uint8).reshape(-1, 3), PALETTE)
    assert (answer.json()[-1]["width"], answer.json()[-1]["height"]) == (80, 96)
    # one raw body, answered by the hot path (no query)
    raw = client.post("/predict/masks", content=mask_pngs[0].read_bytes(), headers={"Content-Type": "image/png"})
    assert raw.status_code == 200 and raw.json()[0]["path"] is None
    assert np.array_equal(np.asarray(png_of(raw.json()[0])), expected[0]["mask"])


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools on NumPy 2
def test_predict_gives_predicts_json_with_coco_rle_per_class_with_mask_rle(seg_client, mask_run, mask_pngs):
    from pycocotools import mask as coco_mask

    from convlab.segmentation.predictions import as_json

    answer = seg_client().post("/predict/masks?mask=rle", files=multipart(mask_pngs))
    assert answer.status_code == 200, answer.text
    predicted = [{**entry, "path": Path(entry["path"]).name} for entry in as_json(mask_run.predict(mask_pngs),
                                                                            mask_run.classes)]
    assert answer.json() == predicted  # predict --json's list (the path: the uploaded file's name)
    for got, wanted in zip(answer.json(), expected_maps(mask_run, mask_pngs)):
        assert set(got) == {"path", "width", "height", "pixels", "masks"}
        assert [m["class"] for m in got["masks"]] == [mask_run.classes[k] for k in np.unique(wanted)]
        for found in got["masks"]:
            rle = found["rle"]
            assert rle["size"] == [got["height"], got["width"]] and isinstance(rle["counts"], str)
            decoded = coco_mask.decode({"size": rle["size"], "counts": rle["counts"].encode()})
            assert np.array_equal(decoded, wanted == mask_run.classes.index(found["class"]))
            assert got["pixels"][found["class"]] == int(decoded.sum())


@pytest.mark.parametrize("query", ["mask=jpeg", "mask=", "mask=PNG"])
def test_predict_refuses_an_unknown_mask_format(seg_client, mask_pngs, query):
    client = seg_client()
    for body in ({"files": multipart(mask_pngs[:1])},
                 {"content": mask_pngs[0].read_bytes(), "headers": {"Content-Type": "image/png"}}):
        answer = client.post(f"/predict/masks?{query}", **body)
        assert answer.status_code == 422, answer.text
        assert answer.json()["error"].startswith("query.mask:") and "'png' or 'rle'" in answer.json()["error"]


@pytest.fixture(scope="module")
def large_png(mask_pngs, tmp_path_factory):
    """A shapes image three times the run's side: a whole pass shrinks it to 64 pixels, tiles do not."""
    path = tmp_path_factory.mktemp("large") / "large.png"
    Image.open(mask_pngs[0]).convert("RGB").resize((192, 192), Image.NEAREST).save(path)
    return path


def test_predict_runs_sliding_windows_with_tile_and_overlap(seg_client, mask_run, large_png):
    from convlab.segmentation.images import read_image

    client = seg_client(max_batch=4)
    pixels, scale = read_image(large_png)
    tiled = mask_run.segment(pixels, scale, tile=64, overlap=0.5)
    assert not np.array_equal(tiled, mask_run.segment(pixels, scale)), "tiles see the shapes at another scale"
    for query, wanted in (("tile=64&overlap=0.5", tiled), ("", mask_run.segment(pixels, scale)),
                          ("tile=64", mask_run.segment(pixels, scale, tile=64))):
        answer = client.post(f"/predict/masks?{query}", files=multipart([large_png]))
        assert answer.status_code == 200, answer.text
        assert np.array_equal(np.asarray(png_of(answer.json()[0])), wanted), query
    image = base64.b64encode(large_png.read_bytes()).decode()
    body = {"parameters": {"tile": 64, "overlap": 0.5},
            "inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": [image]}]}
    outputs = {o["name"]: o for o in client.post("/v2/models/masks/infer", json=body).json()["outputs"]}
    assert np.array_equal(np.asarray(outputs["class_map"]["data"], np.uint8).reshape(192, 192), tiled)


@pytest.mark.parametrize("query, field", [("tile=8", "tile"), ("tile=4096", "tile"), ("tile=big", "tile"),
                                          ("tile=64&overlap=1", "overlap"), ("tile=64&overlap=-0.1", "overlap"),
                                          ("overlap=nan", "overlap")])
def test_predict_refuses_a_bad_tiling(seg_client, mask_pngs, query, field):
    answer = seg_client().post(f"/predict/masks?{query}", files=multipart(mask_pngs[:1]))
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"].startswith(f"query.{field}:")


@pytest.mark.parametrize("parameters, words", [
    ({"tile": 8}, "parameters.tile: must be a whole number of pixels from 16 to 2048, got 8"),
    ({"tile": 64.0}, "parameters.tile: must be a whole number"), ({"tile": True}, "parameters.tile:"),
    ({"tile": 64, "overlap": 1}, "parameters.overlap: must be a number from 0 up to (not including) 1, got 1"),
    ({"overlap": "some"}, "parameters.overlap:")])
def test_oip_refuses_a_bad_tiling(seg_client, parameters, words):
    body = {"parameters": parameters,
            "inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": ["bm90IGRlY29kZWQ="]}]}
    answer = seg_client().post("/v2/models/masks/infer", json=body)  # refused before the image is decoded
    assert answer.status_code == 400 and words in answer.json()["error"]


def test_a_16_bit_upload_keeps_its_range(seg_client, mask_run, mask_pngs, tmp_path):
    """A 16-bit gray PNG is segmented from its full range, as predict reads the file (not cut to 8 bits)."""
    gray = np.asarray(Image.open(mask_pngs[0]).convert("L"), np.uint16) * 257
    path = tmp_path / "deep.png"
    Image.fromarray(gray).save(path)
    assert Image.open(path).mode.startswith("I")
    got = seg_client().post("/predict/masks", files=multipart([path])).json()[0]
    assert np.array_equal(np.asarray(png_of(got)), expected_maps(mask_run, [path])[0])


def test_limits_hold_for_a_segmenter(seg_client):
    client = seg_client(max_pixels=64 * 64)
    too_big = io.BytesIO()
    Image.new("RGB", (65, 64)).save(too_big, "PNG")
    refused = client.post("/predict/masks", content=too_big.getvalue(), headers={"Content-Type": "image/png"})
    assert refused.status_code == 413 and "over the server's cap" in refused.json()["error"]
    garbage = client.post("/predict/masks", files=[("file", ("x.png", b"not an image", "image/png"))])
    assert garbage.status_code == 415 and "not an image" in garbage.json()["error"]


def test_oip_metadata_lists_the_segmentation_outputs(seg_client, mask_run):
    client = seg_client()
    meta = client.get("/v2/models/masks").json()
    assert meta["inputs"] == [{"name": "image", "datatype": "BYTES", "shape": [-1]}]
    assert meta["outputs"] == OIP_OUTPUTS
    models = {m["name"]: m for m in client.get("/api/models").json()}
    assert models["masks"]["task"] == "segment" and models["masks"]["labels"] == mask_run.classes
    assert models["masks"]["metrics"]["miou"] == mask_run.metrics["miou"]


def test_oip_infer_gives_every_class_map_flattened_with_its_shape(seg_client, mask_run, mask_pngs):
    images = [base64.b64encode(path.read_bytes()).decode() for path in mask_pngs]
    body = {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [len(images)], "data": images}]}
    answer = seg_client().post("/v2/models/masks/infer", json=body)
    assert answer.status_code == 200, answer.text
    outputs = {o["name"]: o for o in answer.json()["outputs"]}
    assert [(o["name"], o["datatype"]) for o in answer.json()["outputs"]] == [("class_map", "UINT8"),
                                                                              ("shape", "INT64")]
    shapes = outputs["shape"]["data"]
    assert outputs["shape"]["shape"] == [len(mask_pngs), 2] and shapes[-2:] == [96, 80]
    flat = np.asarray(outputs["class_map"]["data"], np.uint8)
    assert outputs["class_map"]["shape"] == [flat.size] == [sum(h * w for h, w in np.reshape(shapes, (-1, 2)))]
    ends = np.cumsum([h * w for h, w in np.reshape(shapes, (-1, 2))])[:-1]
    for part, (h, w), wanted in zip(np.split(flat, ends), np.reshape(shapes, (-1, 2)),
                                    expected_maps(mask_run, mask_pngs)):
        assert np.array_equal(part.reshape(h, w), wanted)


def test_oip_refuses_float_input_and_classification_for_a_segmenter(seg_client, mask_pngs):
    client = seg_client()
    floats = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3, 64, 64], "data": [0.0] * 12288}]}
    answer = client.post("/v2/models/masks/infer", json=floats)
    assert answer.status_code == 400
    assert "unknown input 'input': model 'masks' takes 'image' (BYTES [-1])" in answer.json()["error"]
    image = base64.b64encode(mask_pngs[0].read_bytes()).decode()
    asked = {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": [image]}],
             "outputs": [{"name": "class_map", "parameters": {"classification": 2}}]}
    answer = client.post("/v2/models/masks/infer", json=asked)
    assert answer.status_code == 400 and "applies to a classifier's outputs" in answer.json()["error"]


def test_a_segmenter_is_served_with_torch_only(mask_run):
    from convlab.errors import ConvlabError
    from convlab.serve.served import load_served

    with pytest.raises(ConvlabError, match="is a segmentation run, served with --backend torch"):
        load_served("masks", mask_run.path, backend="onnx")


def test_a_run_of_a_task_without_a_served_model_is_refused_by_name(mask_run, monkeypatch):
    from convlab.errors import ConvlabError
    from convlab.serve import served

    mask_run.task = "instance"  # as a task the server has no served model for would load
    monkeypatch.setattr(served, "load_run", lambda path, command: mask_run)
    try:
        with pytest.raises(ConvlabError, match="is a run of task .instance.; convlab serve serves classify, "
                                               "multilabel, detect, segment runs"):
            served.load_served("masks", mask_run.path)
    finally:
        del mask_run.task  # the class's own again


def test_tritonclient_reads_the_class_maps(mask_run, mask_pngs):
    """A real `convlab serve` of the run: tritonclient's binary and JSON answers, split by `shape` and reshaped,
    are SegmentationRun.segment's class maps of the same images."""
    http = pytest.importorskip("tritonclient.http")
    expected = expected_maps(mask_run, mask_pngs)
    with running_server(f"masks={mask_run.path}", "--no-access-log") as (url, _process):
        client = http.InferenceServerClient(url.removeprefix("http://"))
        assert client.get_model_metadata("masks")["outputs"] == OIP_OUTPUTS
        image = http.InferInput("image", [len(mask_pngs)], "BYTES")
        image.set_data_from_numpy(np.array([p.read_bytes() for p in mask_pngs], dtype=np.object_), binary_data=True)
        for binary in (True, False):
            outputs = [http.InferRequestedOutput(name, binary_data=binary) for name in ("class_map", "shape")]
            result = client.infer("masks", [image], outputs=outputs)
            flat, shapes = result.as_numpy("class_map"), result.as_numpy("shape")
            assert flat.dtype == np.uint8 and shapes.dtype == np.int64 and shapes.shape == (len(mask_pngs), 2)
            ends = np.cumsum(shapes.prod(axis=1))[:-1]
            for part, shape, wanted in zip(np.split(flat, ends), shapes, expected):
                assert np.array_equal(part.reshape(shape), wanted)
