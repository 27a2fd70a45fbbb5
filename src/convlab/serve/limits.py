"""What the server refuses before working: a wrong token, too large bodies, unknown image formats, images
whose declared size is over the pixel cap (checked before decoding), unknown model names."""
from __future__ import annotations

import hmac
import json
from contextlib import contextmanager
from typing import Mapping

import numpy as np
from PIL import Image

from ..data.decode import TooManyPixels, UnknownFormat, UnreadableImage, load_image, open_image

IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF")  # what Pillow may decode; GIF: first frame only


class RequestError(Exception):
    """A bad request: answered with `status` and {"error": message}, never a traceback."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def lookup(models: Mapping, name: str):
    """The model called `name`: a dictionary key, never a path, so '../x' is just an unknown name (404)."""
    model = models.get(name)
    if model is None:
        served = ", ".join(sorted(models)) or "none"
        raise RequestError(404, f"no model named {name[:80]!r}; served: {served}")
    return model


def check_token(expected: str | None, authorization: str | None) -> None:
    """Bearer token check in constant time; nothing to check when the server has no token."""
    if expected is None:
        return
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected.encode()):
        raise RequestError(401, "missing or wrong token: send the header 'Authorization: Bearer TOKEN'",
                           {"WWW-Authenticate": "Bearer"})


def open_upload(data: bytes, max_pixels: int) -> Image.Image:
    """Encoded image bytes -> the image opened, its header only read: the format must be one served and the
    declared width x height at most `max_pixels` (decompression bombs), else a RequestError; decode_upload or
    data.decode.decode then decodes it."""
    with _refusals():
        return open_image(data, max_pixels, IMAGE_FORMATS)


def decode_upload(data: bytes | Image.Image, channels: int, size: tuple[int, int], max_pixels: int) -> np.ndarray:
    """Encoded image bytes (or an image open_upload opened) -> (channels, H, W) uint8, exactly as predict
    decodes a file (data.decode.load_image)."""
    with _refusals():
        return load_image(data, channels, size, max_pixels, IMAGE_FORMATS)


@contextmanager
def _refusals():
    """The decoder's errors as the server's statuses: 415 a format not served, 413 too many pixels declared,
    422 a damaged image."""
    try:
        yield
    except UnknownFormat:
        raise RequestError(415, f"not an image in a format served ({', '.join(IMAGE_FORMATS)})") from None
    except TooManyPixels as err:
        if not err.limit:  # Pillow refused it before our cap could: a header declaring absurd sizes
            raise RequestError(413, f"image refused as a {err.reason}") from None
        (width, height), pixels = err.size, err.size[0] * err.size[1]
        raise RequestError(413, f"image of {width} x {height} = {pixels:,} pixels is over the server's cap of "
                                f"{err.limit:,} pixels (--max-megapixels; refused before decoding)") from None
    except UnreadableImage as err:
        raise RequestError(422, f"cannot decode the image ({err.reason[:200]})") from None


class BodyLimit:
    """ASGI middleware: a request body over `max_bytes` gets 413 before any route reads it (declared or
    chunked); the body is read once here and replayed to the route."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            return await _refuse(send, 413 if declared.isdigit() else 400,
                                 f"request body of {declared.decode(errors='replace')[:20]} bytes is over the "
                                 f"server's cap of {self.max_bytes:,} bytes (--max-upload-mb)"
                                 if declared.isdigit() else "Content-Length is not a number")
        chunks, total = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client left
            total += len(message.get("body", b""))
            if total > self.max_bytes:
                return await _refuse(send, 413, f"request body over the server's cap of {self.max_bytes:,} bytes "
                                                f"(--max-upload-mb)")
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _refuse(send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
