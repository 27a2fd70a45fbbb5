"""Writing a file so that a crash at any moment leaves the old file or the new one, never a part, with the
permissions any other file the process writes gets (0666 narrowed by the umask)."""
from __future__ import annotations

import io
import json
import os
import secrets
from pathlib import Path


def atomic_write(path: str | Path, data: bytes, durable: bool = True) -> None:
    """Write `data` to `path` through a temp file in the same folder (so the rename is atomic).

    The temp file is opened with mode 0666, which the kernel narrows by the umask as for any open(); it is
    fsynced and moved into place with os.replace, then the folder is fsynced so the rename survives a power
    cut (`durable=False` skips both syncs: for files that can be made again). On failure the temp file is
    removed and the error (OSError, ...) is raised.
    """
    path = Path(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:  # O_EXCL: a name no other writer holds
        temp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            fd = os.open(temp, flags, 0o666)
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    if durable:
        _fsync_folder(path.parent)


def atomic_write_text(path: str | Path, text: str, durable: bool = True) -> None:
    """atomic_write for text, as UTF-8: every file of a run folder is written through here or atomic_write."""
    atomic_write(path, text.encode("utf-8"), durable)


def save_image(image, path: str | Path) -> None:
    """Save a PIL image whole or not at all: generated data is made by every torchrun rank at once, and a
    rank must never read a file another rank is halfway through writing."""
    from PIL import Image  # lazy: start-up (every command writes files; few write images)
    buffer = io.BytesIO()
    image.save(buffer, format=Image.registered_extensions()[Path(path).suffix.lower()])
    atomic_write(path, buffer.getvalue(), durable=False)


def write_json(path: str | Path, document) -> None:
    """A JSON document (metrics.json, labels.json, ...), indented, names kept as they are (not \\u-escaped)."""
    atomic_write_text(path, json.dumps(document, indent=1, ensure_ascii=False))


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself survive a power cut (not possible on every system: then skipped)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
