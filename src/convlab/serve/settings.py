"""The server's settings: one dataclass the CLI fills from its flags and create_app reads."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ServerSettings:
    max_batch: int = 32  # images per forward pass at most
    max_delay_ms: float = 2.0  # how long a batch waits for more requests after its first one
    max_queue: int = 256  # requests waiting per model before new ones get 503
    timeout_s: float = 30.0  # a request not run by then gets 504 (and is not run)
    token: str | None = None  # bearer token every route but the health checks requires, when set
    max_upload_mb: float = 10.0  # request body cap (413)
    max_pixels: int = 16_000_000  # width x height an image may declare, checked before decoding (413): 12-Mpx
    # and 16-Mpx phone photos pass; a PNG at the cap decodes in well under a second
    max_images: int = 256  # images in one request at most (413)
    decode_threads: int = 2  # threads decoding and resizing images, beside the model's thread
    allowed_hosts: list[str] | None = None  # Host names answered (any port), others get 400; None: any
    threads: int = 0  # the model's intra-op threads; 0: the idle cores, as `train --threads 0` picks them

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)
