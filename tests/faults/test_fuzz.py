"""Property-based fuzzing: random and mutated bytes fed to every parser raise ConvlabError or succeed;
no other exception, no hang.

Budget (fixed, derandomized so CI is reproducible): EXAMPLES examples per parser, each with a
DEADLINE; 9 parsers -> 9 x EXAMPLES inputs per run of the suite.
"""
from __future__ import annotations

import gzip
import io
import json
import shutil
from datetime import timedelta
from unittest import mock

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis", reason="the fuzz tests need hypothesis (pip install -e '.[test]')")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402
from PIL import Image  # noqa: E402

import convlab  # noqa: E402
from convlab.config import read_config_file  # noqa: E402
from convlab.data.cifar import read_cifar10  # noqa: E402
from convlab.data.idx import read_idx  # noqa: E402
from convlab.data.decode import load_image, peek_mode  # noqa: E402
from convlab.errors import ConvlabError  # noqa: E402
from convlab.training.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402

# Pillow warns (and then fails or recovers) on damaged TIFF tags and EXIF: expected for these inputs.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:PIL.TiffImagePlugin")

EXAMPLES = 150
DEADLINE = timedelta(seconds=5)  # generous for a loaded CI machine; a hang would exceed it by far
FUZZ = settings(max_examples=EXAMPLES, deadline=DEADLINE, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _flip(base: bytes, edits) -> bytes:
    data = bytearray(base)
    for position, value in edits:
        data[position % len(data)] = value
    return bytes(data)


def mutations(base: bytes) -> st.SearchStrategy[bytes]:
    """Random bytes, truncations, byte overwrites, insertions and deletions of a valid file."""
    size = len(base)
    return st.one_of(
        st.binary(max_size=300),
        st.integers(0, size).map(lambda n: base[:n]),
        st.lists(st.tuples(st.integers(0, size - 1), st.integers(0, 255)), min_size=1, max_size=8).map(
            lambda edits: _flip(base, edits)),
        st.tuples(st.integers(0, size), st.binary(min_size=1, max_size=24)).map(
            lambda cut: base[:cut[0]] + cut[1] + base[cut[0]:]),
        st.tuples(st.integers(0, size), st.integers(1, 64)).map(lambda cut: base[:cut[0]] + base[cut[0] + cut[1]:]),
    )


def _only_convlab_error(parse, *args) -> None:
    try:
        parse(*args)
    except ConvlabError:
        pass


def _idx_file(gz: bool) -> bytes:
    raw = bytes([0, 0, 0x08, 3]) + np.asarray((3, 5, 4), ">u4").tobytes() + bytes(range(60))
    return gzip.compress(raw, mtime=0) if gz else raw


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gzip"])
def test_idx(tmp_path, gz):
    path = tmp_path / ("x-idx3-ubyte" + (".gz" if gz else ""))

    @FUZZ
    @given(mutations(_idx_file(gz)))
    def check(content):
        path.write_bytes(content)
        _only_convlab_error(read_idx, path)

    check()


def test_cifar_batch(tmp_path):
    from convlab.data.cifar import write_cifar10

    rng = np.random.default_rng(0)
    batches = write_cifar10(tmp_path, rng.integers(0, 256, (5, 3, 32, 32), dtype=np.uint8), np.arange(5),
                            rng.integers(0, 256, (2, 3, 32, 32), dtype=np.uint8), np.arange(2),
                            [f"c{i}" for i in range(10)])
    originals = {name: (batches / name).read_bytes() for name in ("test_batch", "batches.meta")}

    @FUZZ
    @given(st.sampled_from(sorted(originals)).flatmap(lambda name: st.tuples(st.just(name),
                                                                           mutations(originals[name]))))
    def check(case):
        name, content = case
        for other, original in originals.items():
            (batches / other).write_bytes(content if other == name else original)
        _only_convlab_error(read_cifar10, batches)

    check()


def _image_files() -> list[bytes]:
    out = []
    for mode, fmt in (("RGB", "PNG"), ("L", "JPEG"), ("P", "GIF"), ("RGB", "BMP"), ("I;16", "TIFF")):
        buffer = io.BytesIO()
        Image.new(mode, (6, 5), 7).save(buffer, format=fmt)
        out.append(buffer.getvalue())
    return out


def test_image_files(tmp_path):
    path = tmp_path / "image.png"
    files = _image_files()

    @FUZZ
    @given(st.integers(0, len(files) - 1).flatmap(lambda i: mutations(files[i])))
    def check(content):
        path.write_bytes(content)
        with mock.patch.object(Image, "MAX_IMAGE_PIXELS", 4_000_000):  # keep absurd headers cheap
            _only_convlab_error(peek_mode, path)
            _only_convlab_error(load_image, path, 3, 8)

    check()


def test_config_yaml(tmp_path):
    path = tmp_path / "config.yaml"
    valid = b"data:\n  name: digits\n  image_size: 16\noptim: {lr: 0.01, schedule: cosine}\nepochs: 3\nquiet: true\n"

    @FUZZ
    @given(st.one_of(mutations(valid), st.text(max_size=200).map(str.encode)))
    def check(content):
        path.write_bytes(content)
        _only_convlab_error(read_config_file, path)

    check()


@pytest.fixture(scope="module")
def fuzz_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("fuzz") / "run"
    convlab.train(data="digits", model="tiny-cnn", epochs=1, out=str(out), quiet=True)
    return out


@pytest.mark.parametrize("name", ["labels.json", "preprocess.json"])
def test_run_json_files(fuzz_run, tmp_path, name):
    run_dir = tmp_path / "run"
    shutil.copytree(fuzz_run, run_dir)
    original = (fuzz_run / name).read_bytes()
    document = json.loads(original)

    def json_variants():
        """Valid JSON with wrong types and values, besides mutated bytes."""
        leaves = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(), st.text(max_size=5))
        values = st.recursive(leaves, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
            st.text(max_size=6), inner, max_size=4), max_leaves=10)
        if isinstance(document, dict):
            return st.tuples(st.sampled_from(sorted(document)), values).map(
                lambda kv: json.dumps({**document, kv[0]: kv[1]}).encode())
        return values.map(lambda v: json.dumps(v).encode())

    @FUZZ
    @given(st.one_of(mutations(original), json_variants()))
    def check(content):
        (run_dir / name).write_bytes(content)
        _only_convlab_error(convlab.load_run, run_dir)

    check()


def test_checkpoint_file(tmp_path):
    import torch

    path = tmp_path / "last.safetensors"
    save_checkpoint(path, {"epoch": 2, "model": {"w": torch.arange(6.0)}, "rng": (1, [2, 3])})
    original = path.read_bytes()

    @FUZZ
    @given(mutations(original))
    def check(content):
        path.write_bytes(content)
        _only_convlab_error(load_checkpoint, path)

    check()
