"""Downloads against a local HTTP server: caching, md5 checks, retries, fallbacks and the offline message."""
from __future__ import annotations

import hashlib
from http.server import SimpleHTTPRequestHandler
from types import SimpleNamespace

import numpy as np
import pytest
from loopback import loopback_server

from convlab.data import load_dataset, sources
from convlab.data.download import Resource, cache_root, fetch_resources
from convlab.errors import ConvlabError


@pytest.fixture
def server(tmp_path):
    """A local server of tmp_path/served that logs request paths and can fail the first N requests."""
    root = tmp_path / "served"
    root.mkdir()
    state = SimpleNamespace(root=root, requests=[], fail_first=0)

    class Handler(SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, *args):
            pass

        def do_GET(self):
            state.requests.append(self.path)
            if state.fail_first > 0:
                state.fail_first -= 1
                self.send_error(503, "busy")
                return
            super().do_GET()

    with loopback_server(Handler) as url:
        state.url = url + "/"
        yield state


@pytest.fixture
def mirror(server, offline, monkeypatch, write_mnist):
    """MNIST files on the local server as CONVLAB_MIRROR, with md5s matching them."""
    arrays = write_mnist(server.root, n_train=20, n_test=10)
    monkeypatch.setenv("CONVLAB_MIRROR", server.url)
    for path in server.root.iterdir():
        monkeypatch.setitem(sources.MNIST_MD5, path.name, hashlib.md5(path.read_bytes()).hexdigest())
    return SimpleNamespace(server=server, arrays=arrays, cache=offline / "mnist")


def _assert_loaded(splits, arrays):
    np.testing.assert_array_equal(splits.train.images[:, 0], arrays["train-images-idx3-ubyte"])
    np.testing.assert_array_equal(splits.train.labels, arrays["train-labels-idx1-ubyte"])
    np.testing.assert_array_equal(splits.test.images[:, 0], arrays["t10k-images-idx3-ubyte"])
    np.testing.assert_array_equal(splits.test.labels, arrays["t10k-labels-idx1-ubyte"])


def test_download_into_cache_then_load_without_network(mirror):
    _assert_loaded(load_dataset("mnist"), mirror.arrays)
    assert sorted(mirror.server.requests) == sorted("/" + p.name for p in mirror.server.root.iterdir())
    assert sorted(p.name for p in mirror.cache.iterdir()) == sorted(sources.MNIST_MD5)

    _assert_loaded(load_dataset("mnist"), mirror.arrays)
    assert len(mirror.server.requests) == 4


def test_corrupt_cached_file_is_fetched_again(mirror):
    load_dataset("mnist")
    (mirror.cache / "train-labels-idx1-ubyte.gz").write_bytes(b"garbage")
    _assert_loaded(load_dataset("mnist"), mirror.arrays)
    assert mirror.server.requests[4:] == ["/train-labels-idx1-ubyte.gz"]


def test_unpacked_files_placed_in_cache_are_used(mirror, write_mnist):
    arrays = write_mnist(mirror.cache, gz=False, seed=5)
    _assert_loaded(load_dataset("mnist"), arrays)
    assert mirror.server.requests == []


def test_wrong_checksum_reports_and_leaves_no_file(mirror, monkeypatch):
    monkeypatch.setitem(sources.MNIST_MD5, "train-images-idx3-ubyte.gz", "0" * 32)
    with pytest.raises(ConvlabError, match=r"could not download mnist \(.*md5 checksum mismatch"):
        load_dataset("mnist")
    assert list(mirror.cache.iterdir()) == []


def test_server_down_gives_data_dir_advice(offline, monkeypatch, closed_port_url):
    monkeypatch.setenv("CONVLAB_MIRROR", closed_port_url())
    with pytest.raises(ConvlabError) as caught:
        load_dataset("mnist")
    message = str(caught.value)
    assert message.startswith("could not download mnist (")
    assert "put train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz" in message
    assert "pass --data-dir FOLDER" in message and str(offline / "mnist") in message
    assert "\n" not in message


def test_incomplete_data_dir_is_mentioned_when_offline(offline, tmp_path, write_mnist):
    write_mnist(tmp_path / "partial")
    (tmp_path / "partial" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(ConvlabError, match=r"--data-dir .*partial lacks t10k-labels-idx1-ubyte .*could not download"):
        load_dataset("mnist", data_dir=tmp_path / "partial")


def test_transient_errors_are_retried(mirror):
    mirror.server.fail_first = 2  # two 503s, then the third attempt succeeds
    _assert_loaded(load_dataset("mnist"), mirror.arrays)
    assert mirror.server.requests[:3] == ["/train-images-idx3-ubyte.gz"] * 3


def test_falls_back_to_next_url(mirror, monkeypatch, closed_port_url):
    monkeypatch.setenv("CONVLAB_MIRROR", mirror.server.url + "nothing-here")  # 404s, no trailing slash
    monkeypatch.setattr(sources, "MNIST_URLS", [closed_port_url(), mirror.server.url])
    _assert_loaded(load_dataset("mnist"), mirror.arrays)
    assert mirror.server.requests[:2] == ["/nothing-here/train-images-idx3-ubyte.gz", "/train-images-idx3-ubyte.gz"]


def test_fetch_resources_directly(server, offline, tmp_path):
    (server.root / "blob.bin").write_bytes(b"hello")
    resource = Resource("blob.bin", hashlib.md5(b"hello").hexdigest())
    dest = tmp_path / "dest"
    fetch_resources("blob", [resource], [server.url], dest)
    assert (dest / "blob.bin").read_bytes() == b"hello"
    fetch_resources("blob", [resource], [server.url], dest)
    assert server.requests == ["/blob.bin"]


def test_cache_root(monkeypatch, tmp_path):
    monkeypatch.setenv("CONVLAB_HOME", str(tmp_path / "x"))
    assert cache_root() == tmp_path / "x"
    monkeypatch.delenv("CONVLAB_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_root() == tmp_path / ".cache" / "convlab"


def test_progress_bar_on_a_terminal(mirror, fake_terminal):
    with fake_terminal() as terminal:
        _assert_loaded(load_dataset("mnist"), mirror.arrays)
    assert "downloading train-images-idx3-ubyte.gz" in terminal.getvalue()
