"""`convlab serve` refusing bad input in one line with exit code 2, before it listens."""
from __future__ import annotations

import socket
import sys

import pytest

from convlab.cli import main


def run_cli(capsys, *args) -> tuple[int, str]:
    code = main(["serve", *map(str, args)])
    return code, capsys.readouterr().err.strip()


def test_missing_extra_says_what_to_install(capsys, monkeypatch, digits_run):
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # import uvicorn now raises ImportError
    code, err = run_cli(capsys, digits_run.path)
    assert code == 2 and err.count("\n") == 0 and 'pip install "convlab[serve]"' in err and "uvicorn" in err


@pytest.mark.parametrize("flags, fragment", [
    (["--max-batch", "0"], "--max-batch must be at least 1"),
    (["--timeout-s", "-1"], "--timeout-s must be positive"),
    (["--port", "70000"], "--port must be between"),
    (["--token", " "], "--token is empty"),
    (["--workers", "-1"], "--workers must be between"),
])
def test_bad_flags(capsys, digits_run, flags, fragment):
    code, err = run_cli(capsys, digits_run.path, *flags)
    assert code == 2 and fragment in err


def test_bad_models(capsys, digits_run, tmp_path):
    code, err = run_cli(capsys, tmp_path / "nothing", "--port", "0")
    assert code == 2 and "does not exist" in err
    code, err = run_cli(capsys, f"a={digits_run.path}", f"a={digits_run.path}", "--port", "0")
    assert code == 2 and "two models are named a" in err
    code, err = run_cli(capsys, f"../x={digits_run.path}")
    assert code == 2 and "model name '../x'" in err


def test_port_in_use(capsys, digits_run):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        code, err = run_cli(capsys, digits_run.path, "--port", taken.getsockname()[1])
    assert code == 2 and "cannot listen on 127.0.0.1" in err


@pytest.mark.parametrize("flags, hosts", [
    ([], ["localhost", "127.0.0.1", "[::1]"]),  # the default 127.0.0.1
    (["--host", "localhost"], ["localhost", "127.0.0.1", "[::1]"]),
    (["--host", "127.0.0.1", "--allow-host", "app.internal"], ["localhost", "127.0.0.1", "[::1]", "app.internal"]),
    (["--host", "0.0.0.0"], None),  # any name: the machine's own names are not known here
    (["--host", "0.0.0.0", "--allow-host", "models.example"], ["localhost", "127.0.0.1", "[::1]", "models.example"]),
])
def test_the_host_names_answered_follow_the_bind(digits_run, flags, hosts):
    from convlab.cli import build_parser
    from convlab.cli.serve import settings_from

    args = build_parser().parse_args(["serve", str(digits_run.path), *flags])
    assert settings_from(args).allowed_hosts == hosts
