"""What the server refuses before working: a wrong token, too large bodies, unknown image formats, images
whose declared size is over the pixel cap (checked before decoding), unknown model names."""
from __future__ import annotations

import hmac
from contextlib import contextmanager
from typing import Mapping

import numpy as np
from PIL import ExifTags, Image
from starlette.middleware.trustedhost import TrustedHostMiddleware

from ..data.decode import ROTATED, TooManyPixels, UnknownFormat, UnreadableImage, decode, load_image, open_image
from .errors import RequestError, error

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")  # the Host names of a loopback bind, any port
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF")  # what Pillow may decode; GIF: first frame only


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


def decode_upload_rgb(data: bytes | Image.Image, at_least: tuple[int, int],
                      max_pixels: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Encoded image bytes (or an image open_upload opened) -> (RGB (H, W, 3) uint8 reduced early to no less
    than `at_least` (width, height), as data.decode.decode reduces; the (width, height) the image is shown at):
    a detector's upload, whose boxes are given in the image's own pixels."""
    with _refusals():
        image = data if isinstance(data, Image.Image) else open_image(data, max_pixels, IMAGE_FORMATS)
        width, height = image.size  # the header's, before a JPEG draft shrinks it
        rgb = np.asarray(decode(image, at_least).convert("RGB"))
        if image.getexif().get(ExifTags.Base.Orientation, 1) in ROTATED:  # read by decode already
            width, height = height, width
        return rgb, (width, height)


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


class BodyTooLarge(RequestError):
    """Raised from the body's stream once it passes the cap; the route stops reading and the client gets 413."""

    def __init__(self, max_bytes: int):
        super().__init__(413, f"request body over the server's cap of {max_bytes:,} bytes (--max-upload-mb)",
                         {"Connection": "close"})  # the rest of the body is left unread


class BodyLimit:
    """ASGI middleware: a request body over `max_bytes` gets 413, refused on its Content-Length before the
    route runs, or counted chunk by chunk as the route reads it (the chunks pass through, nothing is
    buffered here): the chunk that passes the cap raises BodyTooLarge in the route's read."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            return await _refuse(scope, receive, send, 413 if declared.isdigit() else 400,
                                 f"request body of {declared.decode(errors='replace')[:20]} bytes is over the "
                                 f"server's cap of {self.max_bytes:,} bytes (--max-upload-mb)"
                                 if declared.isdigit() else "Content-Length is not a number")
        received, started = 0, False

        async def counted():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def tracked(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except BodyTooLarge as err:  # a route that let it through (the app's exception handlers answer it)
            if started:
                raise
            await _refuse(scope, receive, send, err.status, err.message)


async def _refuse(scope, receive, send, status: int, message: str) -> None:
    """The JSON error, closing the connection: the rest of the body is left unread."""
    await error(status, message, {"Connection": "close"})(scope, receive, send)


class HostCheck:
    """ASGI middleware: only a request whose Host header names one of `allowed_hosts` (any port) reaches the
    app. On a loopback bind this stops DNS rebinding: a web page the user visits can point its own host name
    at 127.0.0.1, but its requests still carry that name. Starlette's TrustedHostMiddleware decides; the
    refusal is the server's JSON 400."""

    def __init__(self, app, allowed_hosts: list[str]):
        self.app, self.allowed_hosts = app, allowed_hosts
        self.trusted = TrustedHostMiddleware(_accept, allowed_hosts, www_redirect=False)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        await self.trusted(scope, receive, _discard)
        if scope.pop(ACCEPTED, False):
            return await self.app(scope, receive, send)
        host = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
        await error(400, f"Host {host[:80]!r} is not a name of this server; it answers "
                         f"{', '.join(self.allowed_hosts)} (any port); --allow-host NAME adds one")(scope, receive, send)


ACCEPTED = "convlab.host_accepted"


async def _accept(scope, _receive, _send) -> None:
    scope[ACCEPTED] = True


async def _discard(_message) -> None:
    """TrustedHostMiddleware's own plain-text refusal goes nowhere; HostCheck answers in JSON."""
