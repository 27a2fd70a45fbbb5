"""Downloading dataset files into the cache: mirrors, retries, md5 checks and atomic writes."""
from __future__ import annotations

import contextvars
import hashlib
import http.client
import os
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConvlabError

TIMEOUT_S = 30
ATTEMPTS_PER_URL = 3  # the first try and up to 2 retries on connection errors
RETRY_DELAY_S = 1.0  # doubled after each failed attempt
CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class Resource:
    """One downloadable file and the md5 of its exact bytes."""

    filename: str
    md5: str


class _Transient(Exception):
    """A failure worth retrying on the same URL (refused, reset, timed out, server error)."""


class _Rejected(Exception):
    """A failure that retrying the same URL will not fix (not found, wrong checksum)."""


def cache_root() -> Path:
    """Where downloads go: $CONVLAB_HOME, else ~/.cache/convlab."""
    home = os.environ.get("CONVLAB_HOME")
    return Path(home).expanduser() if home else Path.home() / ".cache" / "convlab"


def file_md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_resources(dataset: str, resources: list[Resource], base_urls: list[str], dest: Path) -> None:
    """Make every resource present in dest with its md5, downloading those missing or corrupt.

    Each file is tried from $CONVLAB_MIRROR (when set) and then from base_urls in order,
    fetched as base + filename. A file only appears in dest once its checksum is right.
    """
    dest = Path(dest)
    mirror = os.environ.get("CONVLAB_MIRROR")
    bases = ([mirror] if mirror else []) + list(base_urls)
    bases = [base if base.endswith("/") else base + "/" for base in bases]
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConvlabError(f"cannot create the download folder {dest} ({err.strerror or err}); "
                           "set CONVLAB_HOME to a writable folder or pass --data-dir") from err

    for resource in resources:
        target = dest / resource.filename
        if target.is_file() and file_md5(target) == resource.md5:
            continue
        if not _DOWNLOADS.get():
            raise DataMissing(f"{dataset} is not downloaded here ({resource.filename} is missing or damaged in "
                              f"{dest}), and it is not downloaded here: run `convlab eval RUN` once (it downloads "
                              f"the data) or put the files there")
        failures = []
        for base in bases:
            url = base + resource.filename
            try:
                _fetch_with_retries(url, resource, dest)
                break
            except (_Transient, _Rejected) as err:
                failures.append(f"{url}: {err}")
        else:
            raise ConvlabError(_offline_message(dataset, resources, dest, failures))


def _offline_message(dataset: str, resources: list[Resource], dest: Path, failures: list[str]) -> str:
    """Why nothing could be downloaded, and what to do; files in dest that fail their md5 are named."""
    names = ", ".join(r.filename for r in resources)
    reasons = "; ".join(failures) or "no download URL"
    # Telling the user to place the files in dest is no help when they are there already, but damaged
    # (a truncated copy) or another version: say which, with both digests, so they can tell which is which.
    damaged = []
    for resource in resources:
        path = dest / resource.filename
        if path.is_file() and (found := file_md5(path)) != resource.md5:
            damaged.append((path, resource.md5, found))
    if not damaged:
        return (f"could not download {dataset} ({reasons}); put {names} in a folder and pass --data-dir FOLDER, "
                f"or place them in {dest}")
    paths = [str(path) for path, _, _ in damaged]
    listed = paths[0] if len(paths) == 1 else ", ".join(paths[:-1]) + " and " + paths[-1]
    if len(damaged) == 1:
        _, expected, found = damaged[0]
        what = f"{listed} is there but fails its md5 checksum (expected {expected[:8]}, found {found[:8]})"
        todo = "delete it to download it again, or replace it with the original file"
    else:
        digests = "; ".join(f"{path.name}: expected {expected[:8]}, found {found[:8]}"
                            for path, expected, found in damaged)
        what = f"{listed} are there but fail their md5 checksums ({digests})"
        todo = "delete them to download them again, or replace them with the original files"
    return (f"could not download {dataset} ({reasons}); {what}: {todo}, or put {names} in a folder and pass "
            f"--data-dir FOLDER")


def _fetch_with_retries(url: str, resource: Resource, dest: Path) -> None:
    delay = RETRY_DELAY_S
    for attempt in range(ATTEMPTS_PER_URL):
        try:
            _fetch(url, resource, dest)
            return
        except _Transient:
            if attempt == ATTEMPTS_PER_URL - 1:
                raise
            time.sleep(delay)
            delay *= 2


def _fetch(url: str, resource: Resource, dest: Path) -> None:
    """Download url into a temp file in dest, check its md5, fsync and move it into place."""
    try:
        response = urllib.request.urlopen(url, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as err:
        kind = _Transient if err.code >= 500 else _Rejected
        raise kind(f"HTTP {err.code} {err.reason}") from err
    except urllib.error.URLError as err:
        raise _Transient(str(err.reason)) from err
    except (OSError, http.client.HTTPException) as err:
        raise _Transient(str(err) or type(err).__name__) from err

    try:
        handle = tempfile.NamedTemporaryFile(dir=dest, prefix=f".{resource.filename}.", suffix=".part",
                                             delete=False)
    except OSError as err:
        response.close()
        raise ConvlabError(f"cannot write into the download folder {dest} ({err.strerror or err}); "
                           "set CONVLAB_HOME to a writable folder or pass --data-dir") from err
    temp = Path(handle.name)
    try:
        with response, handle:
            digest = _copy_with_progress(response, handle, resource.filename)
            handle.flush()
            os.fsync(handle.fileno())
        if digest != resource.md5:
            raise _Rejected(f"md5 checksum mismatch: expected {resource.md5}, got {digest}")
        os.replace(temp, dest / resource.filename)
    except (OSError, http.client.HTTPException) as err:
        raise _Transient(f"download interrupted ({err})") from err
    finally:
        temp.unlink(missing_ok=True)


def _copy_with_progress(response, out, filename: str) -> str:
    """Stream response into out, with a progress bar when stderr is a terminal; return the md5."""
    digest = hashlib.md5(usedforsecurity=False)
    length = response.headers.get("Content-Length")
    total = int(length) if length and length.isdigit() else None
    progress = None
    if sys.stderr.isatty():
        from rich.console import Console
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

        progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                            TransferSpeedColumn(), console=Console(stderr=True), transient=True)
        progress.start()
        task = progress.add_task(f"downloading {filename}", total=total)
    try:
        while chunk := response.read(CHUNK_BYTES):
            digest.update(chunk)
            out.write(chunk)
            if progress is not None:
                progress.advance(task, len(chunk))
    finally:
        if progress is not None:
            progress.stop()
    return digest.hexdigest()


_DOWNLOADS = contextvars.ContextVar("convlab_downloads", default=True)


class DataMissing(ConvlabError):
    """A dataset's files are not there and downloading them is not allowed here."""


@contextmanager
def no_downloads():
    """Within it, a dataset whose files are missing raises DataMissing instead of being downloaded (a web
    page's GET must answer at once, not fetch hundreds of megabytes)."""
    token = _DOWNLOADS.set(False)
    try:
        yield
    finally:
        _DOWNLOADS.reset(token)
