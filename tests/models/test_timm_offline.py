"""--from timm:NAME without the Hugging Face Hub: one quiet line at once, or the weights from the local cache.

The Hub is a local endpoint on 127.0.0.1 (a closed port, or a server answering 5xx); nothing leaves the machine.
"""
from __future__ import annotations

from http.server import BaseHTTPRequestHandler

import pytest
from loopback import closed_port_url, loopback_server
import torch

from convlab.cli import main
from convlab.errors import ConvlabError
from convlab.models.pretrained import timm_source

timm = pytest.importorskip("timm", reason="timm is the optional extra convlab[timm]")
hub = pytest.importorskip("huggingface_hub")

MODEL = "resnet10t"
REPO = "timm/resnet10t.c3_in1k"  # its pretrained_cfg's hf_hub_id


@pytest.fixture
def use_endpoint(monkeypatch, tmp_path):
    """use_endpoint(url): the Hub at url, an empty private HF cache, no proxies, not in HF offline mode."""
    from huggingface_hub import constants

    def use(url: str):
        for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("no_proxy", "*")
        monkeypatch.setenv("HF_ENDPOINT", url)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        # huggingface_hub reads these from the environment once, when first imported
        monkeypatch.setattr(constants, "ENDPOINT", url)
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}")
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        assert hub.hf_hub_url(REPO, "model.safetensors").startswith(url + "/")  # never the real Hub
        return tmp_path / "hf" / "hub"

    return use


@pytest.fixture
def failing_hub():
    """A local server that answers every request with state.status; it counts the requests."""
    state = type("State", (), {"status": 503, "requests": []})()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _fail(self):
            state.requests.append(f"{self.command} {self.path}")
            self.send_response(state.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_HEAD = do_GET = _fail

    with loopback_server(Handler) as url:
        state.url = url
        yield state


def _assert_one_quiet_error(caught, capfd, reason: str):
    message = str(caught.value)
    assert message.startswith(f"--from timm:{MODEL}: cannot get its pretrained weights (")
    assert reason in message
    assert "--weights PATH" in message and "\n" not in message
    out, err = capfd.readouterr()
    assert "Retry" not in out + err and "thrown while requesting" not in out + err
    assert out == "" and err == ""


def test_a_refused_connection_fails_at_once_without_retry_lines(use_endpoint, capfd):
    url = closed_port_url()
    use_endpoint(url)
    with pytest.raises(ConvlabError) as caught:
        timm_source(MODEL, None)
    _assert_one_quiet_error(caught, capfd, f"the Hugging Face Hub at {url} does not answer")


@pytest.mark.parametrize("status", [503, 500])
def test_a_hub_answering_server_errors_fails_after_one_request(use_endpoint, failing_hub, capfd, status):
    failing_hub.status = status
    use_endpoint(failing_hub.url)
    with pytest.raises(ConvlabError) as caught:
        timm_source(MODEL, None)
    _assert_one_quiet_error(caught, capfd, f"HTTP {status} from the Hugging Face Hub at {failing_hub.url}")
    assert failing_hub.requests == [f"HEAD /{REPO}/resolve/main/model.safetensors"]


def test_the_cli_prints_the_one_line(use_endpoint, capfd):
    use_endpoint(closed_port_url())
    assert main(["finetune", "--from", f"timm:{MODEL}", "--data", "digits", "--quiet"]) == 2
    out, err = capfd.readouterr()
    assert "Retry" not in out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and f"--from timm:{MODEL}: cannot get its pretrained weights" in lines[0]
    assert "--weights PATH" in lines[0]


def test_hf_offline_mode_without_cached_weights_says_so(use_endpoint, monkeypatch, capfd):
    from huggingface_hub import constants

    use_endpoint(closed_port_url())
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ConvlabError) as caught:
        timm_source(MODEL, None)
    _assert_one_quiet_error(caught, capfd, "HF_HUB_OFFLINE is set")


def test_weights_in_the_local_cache_load_without_the_hub(use_endpoint, capfd):
    from safetensors.torch import save_file

    cache = use_endpoint(closed_port_url())
    torch.manual_seed(1)
    source = timm.create_model(MODEL, pretrained=False)
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / ("models--" + REPO.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in source.state_dict().items()},
              str(repo / "snapshots" / commit / "model.safetensors"))

    pretrained = timm_source(MODEL, None)
    assert torch.equal(pretrained.state["conv1.0.weight"], source.state_dict()["conv1.0.weight"])
    out, err = capfd.readouterr()
    assert "Retry" not in out + err
