"""CIFAR-10 python batches: exact reading from folder and archive, and refusing unsafe pickles."""
from __future__ import annotations

import io
import os
import pickle
import shlex
import struct
import tarfile

import numpy as np
import pytest

from convlab.data.cifar import read_cifar10, write_cifar10_archive
from convlab.errors import ConvlabError


def _check_exact(splits, data):
    np.testing.assert_array_equal(splits.train.images, data["train_images"])
    np.testing.assert_array_equal(splits.train.labels, data["train_labels"])
    np.testing.assert_array_equal(splits.test.images, data["test_images"])
    np.testing.assert_array_equal(splits.test.labels, data["test_labels"])
    assert splits.classes == data["classes"]
    assert splits.train.images.dtype == np.uint8 and splits.train.labels.dtype == np.int64
    assert splits.shape == (3, 32, 32)
    assert splits.hflip


def test_read_folder_exact(tmp_path, write_cifar):
    data = write_cifar(tmp_path)
    splits = read_cifar10(data["batches"])
    assert len(splits.train) == 20 and len(splits.test) == 6
    _check_exact(splits, data)


def test_batches_hold_the_original_layout(tmp_path, write_cifar):
    data = write_cifar(tmp_path)
    with open(data["batches"] / "data_batch_1", "rb") as f:
        batch = pickle.load(f, encoding="bytes")
    assert set(batch) == {b"batch_label", b"labels", b"data", b"filenames"}
    assert batch[b"data"].shape == (4, 3072) and batch[b"data"].dtype == np.uint8
    # Row layout: 1024 red values, then green, then blue.
    np.testing.assert_array_equal(batch[b"data"][0, 1024:2048], data["train_images"][0, 1].ravel())


def test_read_archive_exact(tmp_path, write_cifar):
    data = write_cifar(tmp_path / "src")
    archive = write_cifar10_archive(data["batches"], tmp_path / "cifar-10-python.tar.gz")
    _check_exact(read_cifar10(archive), data)


def test_archive_members_are_never_extracted(tmp_path, write_cifar):
    data = write_cifar(tmp_path / "src")
    archive = tmp_path / "out" / "cifar-10-python.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(data["batches"], arcname="cifar-10-batches-py")
        evil = tarfile.TarInfo("../escaped.txt")
        evil.size = 3
        tar.addfile(evil, io.BytesIO(b"bad"))
    _check_exact(read_cifar10(archive), data)
    assert not (tmp_path / "escaped.txt").exists()
    assert sorted(p.name for p in archive.parent.iterdir()) == ["cifar-10-python.tar.gz"]


def test_legacy_numpy_core_module_name_is_accepted(tmp_path, write_cifar):
    # The real files were pickled by Python 2 numpy, which named numpy.core.multiarray.
    data = write_cifar(tmp_path)
    for path in data["batches"].iterdir():
        content = path.read_bytes()
        assert b"numpy.core.multiarray" not in content
        path.write_bytes(content.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n"))
    _check_exact(read_cifar10(data["batches"]), data)


def _python2_batch(images, labels) -> bytes:
    """The opcodes Python 2's cPickle wrote for the real batches: str as BINSTRING, numpy.core names."""
    data = images.reshape(len(images), 3072).tobytes()  # (N, 3, 32, 32) -> (N, 3072)
    parts = [
        b"\x80\x02}(",
        b"U\x04data", b"cnumpy.core.multiarray\n_reconstruct\n", b"cnumpy\nndarray\n", b"K\x00\x85U\x01b\x87R",
        b"(K\x01", b"M" + struct.pack("<H", len(images)), b"M\x00\x0c\x86",
        b"cnumpy\ndtype\nU\x02u1K\x00K\x01\x87R(K\x03U\x01|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb",
        b"\x89T" + struct.pack("<I", len(data)) + data, b"tb",
        b"U\x06labels](",
    ]
    parts += [b"K" + bytes([int(v)]) for v in labels]
    parts.append(b"eu.")
    return b"".join(parts)


def test_python2_pickled_batch(tmp_path, write_cifar):
    data = write_cifar(tmp_path)
    images, labels = data["train_images"][:4], data["train_labels"][:4]
    (data["batches"] / "data_batch_1").write_bytes(_python2_batch(images, labels))
    splits = read_cifar10(data["batches"])
    np.testing.assert_array_equal(splits.train.images, data["train_images"])
    np.testing.assert_array_equal(splits.train.labels, data["train_labels"])


class _OpensFile:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


class _RunsShell:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, ("touch " + shlex.quote(self.marker),)


@pytest.mark.parametrize("payload", [_OpensFile, _RunsShell])
def test_pickle_that_runs_code_is_refused_without_side_effect(tmp_path, write_cifar, payload):
    data = write_cifar(tmp_path)
    # The payload is live: plain pickle would act on it.
    proof = tmp_path / "proof"
    pickle.loads(pickle.dumps(payload(proof), protocol=2))
    assert proof.exists()

    marker = tmp_path / "pwned"
    batch = {b"data": payload(marker), b"labels": [0]}
    with open(data["batches"] / "data_batch_1", "wb") as f:
        pickle.dump(batch, f, protocol=2)
    with pytest.raises(ConvlabError, match=r"data_batch_1: refusing to load"):
        read_cifar10(data["batches"])
    assert not marker.exists()


def test_codecs_encode_only_for_latin1(tmp_path, write_cifar):
    data = write_cifar(tmp_path)
    content = (data["batches"] / "test_batch").read_bytes()
    assert b"latin1" in content
    (data["batches"] / "test_batch").write_bytes(content.replace(b"latin1", b"rot_13", 1))
    with pytest.raises(ConvlabError, match="test_batch"):
        read_cifar10(data["batches"])


def _rewrite_batch(path, changes):
    with open(path, "rb") as f:
        batch = pickle.load(f, encoding="bytes")
    batch.update(changes)
    with open(path, "wb") as f:
        pickle.dump(batch, f, protocol=2)


@pytest.mark.parametrize("changes, message", [
    ({b"labels": [0, 1, 2]}, r"data_batch_2: 4 images but 3 labels"),
    ({b"labels": [0, 1, 2, 10]}, r"data_batch_2: labels must lie in 0\.\.9"),
    ({b"data": np.zeros((4, 100), np.uint8)}, r"data_batch_2: b'data' should be a uint8 \(N, 3072\)"),
    ({b"data": np.zeros((4, 3072), np.float32)}, r"data_batch_2: b'data' should be a uint8"),
])
def test_bad_batch_contents(tmp_path, write_cifar, changes, message):
    data = write_cifar(tmp_path)
    _rewrite_batch(data["batches"] / "data_batch_2", changes)
    with pytest.raises(ConvlabError, match=message):
        read_cifar10(data["batches"])


def test_missing_batch_file(tmp_path, write_cifar):
    data = write_cifar(tmp_path)
    (data["batches"] / "data_batch_4").unlink()
    with pytest.raises(ConvlabError, match="is missing data_batch_4"):
        read_cifar10(data["batches"])


@pytest.mark.parametrize("content", [b"", b"not a pickle at all", pickle.dumps([1, 2, 3], protocol=2)])
def test_garbage_batch(tmp_path, write_cifar, content):
    data = write_cifar(tmp_path)
    (data["batches"] / "batches.meta").write_bytes(content)
    with pytest.raises(ConvlabError, match="batches.meta"):
        read_cifar10(data["batches"])


def test_damaged_archive(tmp_path, write_cifar):
    data = write_cifar(tmp_path / "src")
    archive = write_cifar10_archive(data["batches"], tmp_path / "cifar-10-python.tar.gz")
    archive.write_bytes(archive.read_bytes()[:3000])
    with pytest.raises(ConvlabError, match="cifar-10-python.tar.gz"):
        read_cifar10(archive)
    archive.write_bytes(b"plain text")
    with pytest.raises(ConvlabError, match="cifar-10-python.tar.gz"):
        read_cifar10(archive)
