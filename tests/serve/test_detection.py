"""A detection run served: /predict's boxes (multipart, raw, conf and iou checked), OIP's four tensors and
their metadata, the batcher and the limits, in process (TestClient); a real server driven by tritonclient."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from .conftest import running_server

pytestmark = pytest.mark.slow  # the shapes run they share trains for ~20 s

OIP_OUTPUTS = [{"name": "boxes", "datatype": "FP32", "shape": [-1, 4]},
               {"name": "scores", "datatype": "FP32", "shape": [-1]},
               {"name": "labels", "datatype": "BYTES", "shape": [-1]},
               {"name": "count", "datatype": "INT64", "shape": [-1]}]


def same_boxes(got: list[dict], expected: list[dict], pixels: float = 0.05, score: float = 1e-3) -> None:
    """The same boxes in the same order (labels equal, corners and scores within the tolerances)."""
    assert [b["label"] for b in got] == [b["label"] for b in expected]
    for mine, theirs in zip(got, expected):
        np.testing.assert_allclose(mine["box"], theirs["box"], atol=pixels)
        assert abs(mine["score"] - theirs["score"]) <= score


def multipart(paths) -> list:
    return [("file", (path.name, path.read_bytes(), "image/png")) for path in paths]


def oip_json(pngs: list[bytes], **parameters) -> dict:
    import base64

    return {"parameters": parameters, "inputs": [{"name": "image", "datatype": "BYTES", "shape": [len(pngs)],
                                                   "data": [base64.b64encode(png).decode() for png in pngs]}]}


def test_predict_answers_the_runs_boxes(detector_client, shapes_run, shapes_pngs):
    client = detector_client()
    answer = client.post("/predict/shapes", files=multipart(shapes_pngs))
    assert answer.status_code == 200
    expected = shapes_run.predict(shapes_pngs)
    assert [a["path"] for a in answer.json()] == [p.name for p in shapes_pngs]
    assert sum(len(a["boxes"]) for a in answer.json()) >= len(shapes_pngs)  # every image holds a shape
    for got, wanted in zip(answer.json(), expected):
        assert (got["width"], got["height"]) == (wanted["width"], wanted["height"]) == (64, 64)
        assert all(set(box) == {"label", "score", "box"} for box in got["boxes"])
        same_boxes(got["boxes"], wanted["boxes"])
    # one raw body, answered by the hot path (no query) and by the route (conf and iou)
    raw = client.post("/predict/shapes", content=shapes_pngs[0].read_bytes(), headers={"Content-Type": "image/png"})
    assert raw.status_code == 200 and raw.json()[0]["path"] is None
    same_boxes(raw.json()[0]["boxes"], expected[0]["boxes"])
    strict = client.post("/predict/shapes?conf=0.9&iou=0.3", content=shapes_pngs[0].read_bytes(),
                         headers={"Content-Type": "image/png"})
    same_boxes(strict.json()[0]["boxes"], shapes_run.predict(shapes_pngs[:1], conf=0.9, iou=0.3)[0]["boxes"])
    assert all(box["score"] >= 0.9 for box in strict.json()[0]["boxes"])
    nothing = client.post("/predict/shapes?conf=1", files=multipart(shapes_pngs[:2]))
    assert [a["boxes"] for a in nothing.json()] == [[], []]
    # the classifier beside it answers as before
    digits = client.post("/predict/digits?top_k=2", content=shapes_pngs[0].read_bytes(),
                         headers={"Content-Type": "image/png"})
    assert digits.status_code == 200 and len(digits.json()[0]["top"]) == 2


@pytest.mark.parametrize("query, field", [("conf=1.5", "conf"), ("conf=-0.1", "conf"), ("conf=high", "conf"),
                                          ("iou=2", "iou"), ("iou=nan", "iou")])
def test_predict_refuses_thresholds_out_of_range(detector_client, shapes_pngs, query, field):
    client = detector_client()
    for body in ({"files": multipart(shapes_pngs[:1])},
                 {"content": shapes_pngs[0].read_bytes(), "headers": {"Content-Type": "image/png"}}):
        answer = client.post(f"/predict/shapes?{query}", **body)
        assert answer.status_code == 422, answer.text
        assert answer.json()["error"].startswith(f"query.{field}:")


@pytest.mark.parametrize("side", [256, 1024])
def test_boxes_are_in_the_uploaded_images_pixels(detector_client, shapes_run, shapes_pngs, tmp_path, side):
    """A larger copy of an image: its boxes are predict's on that file, in its own pixels, also when the server
    decodes it at a reduced working size first (1024 px: box-averaged to 256 before the detector's resize)."""
    large = tmp_path / f"large-{side}.png"
    Image.open(shapes_pngs[0]).resize((side, side), Image.NEAREST).save(large)
    answer = detector_client().post("/predict/shapes?conf=0.5", content=large.read_bytes(),
                                    headers={"Content-Type": "image/png"}).json()[0]
    assert (answer["width"], answer["height"]) == (side, side)
    expected = shapes_run.predict([large], conf=0.5)[0]["boxes"]
    assert expected, "the run finds a shape in the image"
    same_boxes(answer["boxes"], expected, pixels=0.05 if side == 256 else side / 64, score=0.02)


def test_boxes_of_an_exif_rotated_upload_are_in_the_image_as_shown(detector_client, shapes_run, shapes_pngs,
                                                                  tmp_path):
    """A photo stored sideways with EXIF orientation 6: width, height and boxes are those of the image as shown,
    as predict reads it."""
    shown = np.zeros((96, 64, 3), np.uint8)
    shown[16:80] = np.asarray(Image.open(shapes_pngs[1]).convert("RGB"))
    stored = Image.fromarray(shown).transpose(Image.Transpose.ROTATE_90)  # orientation 6 turns it back
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "sideways.png"
    stored.save(path, exif=exif)
    answer = detector_client().post("/predict/shapes", files=multipart([path])).json()[0]
    assert (answer["width"], answer["height"]) == (64, 96)
    expected = shapes_run.predict([path])[0]
    assert expected["boxes"] and (expected["width"], expected["height"]) == (64, 96)
    same_boxes(answer["boxes"], expected["boxes"])


def test_batched_requests_get_their_own_boxes(detector_client, shapes_pngs):
    """Images of one request run in passes of at most --max-batch; each image gets its own boxes back."""
    one_by_one = [detector_client().post("/predict/shapes", files=multipart([path])).json()[0]
                  for path in shapes_pngs]
    together = detector_client(max_batch=2).post("/predict/shapes", files=multipart(shapes_pngs)).json()
    for got, wanted in zip(together, one_by_one):
        same_boxes(got["boxes"], wanted["boxes"])


def test_limits_hold_for_a_detector(detector_client, shapes_pngs):
    client = detector_client(max_pixels=64 * 64)
    too_big = io.BytesIO()
    Image.new("RGB", (65, 64)).save(too_big, "PNG")
    refused = client.post("/predict/shapes", content=too_big.getvalue(), headers={"Content-Type": "image/png"})
    assert refused.status_code == 413 and "over the server's cap" in refused.json()["error"]
    garbage = client.post("/predict/shapes", files=[("file", ("x.png", b"not an image", "image/png"))])
    assert garbage.status_code == 415 and "not an image" in garbage.json()["error"]
    infer = client.post("/v2/models/shapes/infer", json=oip_json([too_big.getvalue()]))
    assert infer.status_code == 413


def test_oip_metadata_lists_the_detection_outputs(detector_client, shapes_run):
    client = detector_client()
    meta = client.get("/v2/models/shapes").json()
    assert meta["inputs"] == [{"name": "image", "datatype": "BYTES", "shape": [-1]}]
    assert meta["outputs"] == OIP_OUTPUTS
    assert client.get("/v2/models/digits").json()["outputs"][0]["name"] == "probabilities"  # unchanged
    models = {m["name"]: m for m in client.get("/api/models").json()}
    assert models["shapes"]["task"] == "detect" and models["shapes"]["labels"] == shapes_run.classes
    assert models["digits"]["task"] == "classify"


def test_oip_infer_gives_predicts_boxes_as_four_tensors(detector_client, shapes_pngs):
    client = detector_client()
    pngs = [path.read_bytes() for path in shapes_pngs]
    predicted = client.post("/predict/shapes?conf=0.3&iou=0.4", files=multipart(shapes_pngs)).json()
    answer = client.post("/v2/models/shapes/infer", json=oip_json(pngs, conf=0.3, iou=0.4))
    assert answer.status_code == 200, answer.text
    outputs = {o["name"]: o for o in answer.json()["outputs"]}
    assert [(o["name"], o["datatype"]) for o in answer.json()["outputs"]] == [(o["name"], o["datatype"])
                                                                              for o in OIP_OUTPUTS]
    count = outputs["count"]["data"]
    assert outputs["count"]["shape"] == [len(pngs)] and count == [len(p["boxes"]) for p in predicted]
    total = sum(count)
    assert outputs["boxes"]["shape"] == [total, 4] and outputs["scores"]["shape"] == [total]
    boxes = np.asarray(outputs["boxes"]["data"], dtype=np.float32).reshape(-1, 4)
    flat = [box for p in predicted for box in p["boxes"]]
    assert outputs["labels"]["data"] == [box["label"] for box in flat]
    np.testing.assert_allclose(boxes, np.array([box["box"] for box in flat], np.float32).reshape(-1, 4), atol=0.05)
    np.testing.assert_allclose(outputs["scores"]["data"], [box["score"] for box in flat], atol=1e-3)


@pytest.mark.parametrize("request_body, status, words", [
    (oip_json([b"not decoded: refused first"], conf=2), 400, "parameters.conf: must be a number from 0 to 1, got 2"),
    (oip_json([b"not decoded: refused first"], iou="wide"), 400, "parameters.iou: must be a number from 0 to 1"),
    ({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3, 64, 64], "data": [0.0] * 12288}]}, 400,
     "unknown input 'input': model 'shapes' takes 'image' (BYTES [-1])"),
])
def test_oip_refusals_for_a_detector(detector_client, request_body, status, words):
    answer = detector_client().post("/v2/models/shapes/infer", json=request_body)
    assert answer.status_code == status and words in answer.json()["error"]


def test_oip_classification_parameter_is_a_classifiers(detector_client, shapes_pngs):
    body = {**oip_json([shapes_pngs[0].read_bytes()]), "outputs": [{"name": "scores",
                                                                     "parameters": {"classification": 2}}]}
    answer = detector_client().post("/v2/models/shapes/infer", json=body)
    assert answer.status_code == 400 and "applies to a classifier's outputs" in answer.json()["error"]


def test_a_detector_is_served_with_torch_only(shapes_run):
    from convlab.errors import ConvlabError
    from convlab.serve.served import load_served

    with pytest.raises(ConvlabError, match="is a detection run, served with --backend torch"):
        load_served("shapes", shapes_run.path, backend="onnx")


def test_tritonclient_reads_the_detection_outputs(shapes_run, shapes_pngs):
    """A real `convlab serve` of the run: tritonclient's binary and JSON answers split by `count` give the boxes
    of the same server's /predict."""
    import httpx

    http = pytest.importorskip("tritonclient.http")
    with running_server(f"shapes={shapes_run.path}", "--no-access-log") as (url, _process):
        files = multipart(shapes_pngs)
        predicted = httpx.post(f"{url}/predict/shapes?conf=0.3", files=files, timeout=60).json()
        client = http.InferenceServerClient(url.removeprefix("http://"))
        meta = client.get_model_metadata("shapes")
        assert meta["outputs"] == OIP_OUTPUTS
        image = http.InferInput("image", [len(shapes_pngs)], "BYTES")
        image.set_data_from_numpy(np.array([p.read_bytes() for p in shapes_pngs], dtype=np.object_), binary_data=True)
        for binary in (True, False):
            outputs = [http.InferRequestedOutput(name, binary_data=binary)
                       for name in ("boxes", "scores", "labels", "count")]
            result = client.infer("shapes", [image], outputs=outputs, parameters={"conf": 0.3})
            count = result.as_numpy("count")
            assert count.dtype == np.int64 and count.tolist() == [len(p["boxes"]) for p in predicted]
            ends = np.cumsum(count)[:-1]
            labels = [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("labels")]
            per_image = zip(np.split(result.as_numpy("boxes"), ends), np.split(result.as_numpy("scores"), ends),
                            np.split(np.array(labels, dtype=object), ends))
            for (boxes, scores, names), wanted in zip(per_image, predicted):
                assert boxes.dtype == np.float32 and boxes.shape == (len(wanted["boxes"]), 4)
                found = [{"label": n, "score": float(s), "box": b.tolist()} for b, s, n in zip(boxes, scores, names)]
                same_boxes(found, wanted["boxes"])
