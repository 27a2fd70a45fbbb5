"""A throwaway PostgreSQL server on 127.0.0.1 for tests: Debian's initdb and pg_ctl in a temporary folder.

PostgreSQL refuses to run as root, so as root the server runs as the `postgres` user the Debian package
creates (through runuser). Tests that need it skip, saying why, where PostgreSQL is not installed.
"""
from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

USER = "postgres"


def _bin() -> Path | None:
    """The newest /usr/lib/postgresql/VERSION/bin (Debian), else the folder of a pg_ctl on PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("pg_ctl")
    return Path(on_path).parent if on_path else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def postgres_server(database: str = "convlab"):
    """Yield the SQLAlchemy URL of a fresh database on a fresh server; stop and delete it afterwards."""
    folder = _bin()
    if folder is None:
        pytest.skip("PostgreSQL is not installed (Debian: apt-get install postgresql); the storage tests need a "
                    "real server")
    prefix: list[str] = []
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam(USER)
        except KeyError:
            pytest.skip(f"running as root and there is no {USER!r} user to run PostgreSQL as (it refuses root)")
        if shutil.which("runuser") is None:
            pytest.skip("running as root without runuser to start PostgreSQL as another user")
        prefix = ["runuser", "-u", USER, "--"]
    root = Path(tempfile.mkdtemp(prefix="convlab-postgres-"))
    data, port = root / "data", _free_port()
    if prefix:
        os.chown(root, user.pw_uid, user.pw_gid)

    def run(*command: str) -> None:
        done = subprocess.run([*prefix, *command], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed: {done.stderr[-2000:] or done.stdout[-2000:]}")

    try:
        run(str(folder / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
            "--no-sync")
        run(str(folder / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"), "-w", "-t", "60",
            "-o", f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
        try:
            run(str(folder / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", database)
            yield f"postgresql://postgres@127.0.0.1:{port}/{database}"  # as docs/insight.md writes it
        finally:
            run(str(folder / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
    finally:
        shutil.rmtree(root, ignore_errors=True)
