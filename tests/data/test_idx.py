"""IDX reading and writing: round trips and every kind of damaged file."""
from __future__ import annotations

import gzip

import numpy as np
import pytest

from convlab.data.idx import read_idx, write_idx
from convlab.errors import ConvlabError

ARRAYS = {
    "uint8-3d": np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4),
    "uint8-1d": np.array([0, 9, 255, 7], dtype=np.uint8),
    "int8": np.array([-128, 0, 127], dtype=np.int8),
    "int16": np.array([[-300, 2], [1000, -1]], dtype=np.int16),
    "int32": np.array([-(2**31), 2**31 - 1], dtype=np.int32),
    "float32": np.array([0.5, -1.25], dtype=np.float32),
    "float64": np.array([[1e-300], [3.5]], dtype=np.float64),
}


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("key", list(ARRAYS))
def test_round_trip(tmp_path, key, suffix):
    path = tmp_path / f"{key}-idx{suffix}"
    write_idx(path, ARRAYS[key])
    back = read_idx(path)
    assert back.dtype == ARRAYS[key].dtype.newbyteorder("=")
    np.testing.assert_array_equal(back, ARRAYS[key])
    assert back.flags.writeable


def test_file_layout_is_big_endian(tmp_path):
    path = tmp_path / "labels-idx1-int"
    write_idx(path, np.array([1, 258], dtype=np.int32))
    assert path.read_bytes() == bytes([0, 0, 0x0C, 1, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 1, 2])


def test_gz_is_detected_by_content_not_name(tmp_path):
    raw_named_gz = tmp_path / "raw-but-named.gz"
    write_idx(tmp_path / "raw", ARRAYS["uint8-1d"])
    raw_named_gz.write_bytes((tmp_path / "raw").read_bytes())
    np.testing.assert_array_equal(read_idx(raw_named_gz), ARRAYS["uint8-1d"])

    gz_named_raw = tmp_path / "gzip-without-suffix"
    write_idx(tmp_path / "x.gz", ARRAYS["uint8-1d"])
    gz_named_raw.write_bytes((tmp_path / "x.gz").read_bytes())
    np.testing.assert_array_equal(read_idx(gz_named_raw), ARRAYS["uint8-1d"])


def test_gz_output_is_deterministic(tmp_path):
    write_idx(tmp_path / "a.gz", ARRAYS["uint8-3d"])
    write_idx(tmp_path / "b.gz", ARRAYS["uint8-3d"])
    assert (tmp_path / "a.gz").read_bytes() == (tmp_path / "b.gz").read_bytes()


def _valid(shape=(4, 28, 28)) -> bytes:
    header = bytes([0, 0, 0x08, len(shape)]) + np.asarray(shape, dtype=">u4").tobytes()
    return header + bytes(int(np.prod(shape)))


MALFORMED = {
    "bad-magic": b"\x01\x02\x08\x01" + bytes(8),
    "unknown-type-code": bytes([0, 0, 0x0A, 1, 0, 0, 0, 2, 1, 2]),
    "zero-dims": bytes([0, 0, 0x08, 0]),
    "truncated-header": bytes([0, 0, 0x08, 3, 0, 0, 0, 4]),
    "truncated-body": _valid()[:100],
    "extra-bytes": _valid() + b"\x00\x01",
    "empty": b"",
    "short": b"\x00\x00",
}


@pytest.mark.parametrize("case", list(MALFORMED))
@pytest.mark.parametrize("compress", [False, True])
def test_malformed_raises_convlab_error_naming_file(tmp_path, case, compress):
    name = f"train-images-idx3-ubyte-{case}" + (".gz" if compress else "")
    content = gzip.compress(MALFORMED[case]) if compress else MALFORMED[case]
    (tmp_path / name).write_bytes(content)
    with pytest.raises(ConvlabError, match=name):
        read_idx(tmp_path / name)


def test_truncated_body_message_gives_sizes(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(_valid((8, 28, 28))[:116]))
    with pytest.raises(ConvlabError, match=r"truncated IDX body: expected 6272 bytes of data.*found 100"):
        read_idx(path)


@pytest.mark.parametrize("content", [
    b"<html>404 Not Found</html>",  # a web page saved under the .gz name
    b"\x1f\x8b\x08\x00garbage-after-gzip-magic",
    b"\x1f\x8b",
])
def test_not_gzip_but_gz_name(tmp_path, content):
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(content)
    with pytest.raises(ConvlabError, match="t10k-labels-idx1-ubyte.gz"):
        read_idx(path)


def test_cut_off_gzip_download(tmp_path):
    write_idx(tmp_path / "full.gz", np.random.default_rng(0).integers(0, 256, (50, 28, 28), dtype=np.uint8))
    path = tmp_path / "cut-idx3-ubyte.gz"
    path.write_bytes((tmp_path / "full.gz").read_bytes()[:500])
    with pytest.raises(ConvlabError, match="cut-idx3-ubyte.gz"):
        read_idx(path)


def test_missing_file(tmp_path):
    with pytest.raises(ConvlabError, match="nothere-idx1-ubyte"):
        read_idx(tmp_path / "nothere-idx1-ubyte")


def test_random_garbage_only_raises_convlab_error(tmp_path):
    rng = np.random.default_rng(1)
    for i in range(200):
        start = [b"", b"\x00\x00", b"\x1f\x8b", b"\x00\x00\x08", b"\x00\x00\x0d\x02"][i % 5]
        path = tmp_path / f"garbage-{i}"
        path.write_bytes(start + rng.integers(0, 256, int(rng.integers(0, 40)), dtype=np.uint8).tobytes())
        try:
            read_idx(path)
        except ConvlabError as err:
            assert path.name in str(err)


def test_write_rejects_unsupported_dtype(tmp_path):
    with pytest.raises(ValueError, match="int64"):
        write_idx(tmp_path / "x", np.zeros(3, dtype=np.int64))
