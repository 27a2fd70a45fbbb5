"""What the routes share while the server runs (settings, the models, one batcher per model, the decoding
threads, metrics), and the dependencies through which the module-level routes get it."""
from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Mapping

import numpy as np
from fastapi import Depends, Request

from ..data.decode import declared_pixels
from .batching import Batcher
from .limits import open_upload
from .metrics import ServerMetrics
from .settings import ServerSettings

# an image declaring this few pixels (a 28x28 digit has 784) decodes in well under 100 us, less than the ~120 us
# of a hop to a decoding thread and back (measured on a 2-core CPU); larger ones go to the threads. The declared
# size decides, not the bytes: a few kB of PNG can declare 36 Mpx.
INLINE_DECODE_PIXELS = 128 * 128


class ServerState:
    def __init__(self, models: Mapping, settings: ServerSettings, threads: int):
        self.models, self.settings, self.metrics = dict(models), settings, ServerMetrics()
        self.batchers = {name: Batcher(model.infer, settings.max_batch, settings.max_delay_ms / 1000,
                                       settings.max_queue, threads, self.metrics.batch_observer(name), name,
                                       self.metrics.depth_observer(name))
                         for name, model in models.items()}
        for name, batcher in self.batchers.items():
            self.metrics.watch_queue(name, lambda batcher=batcher: batcher.depth)
        self.decoder: ThreadPoolExecutor | None = None
        self.views: dict = {}  # the web app's ModelViews by model name, made on first use
        self.views_lock = threading.Lock()

    def start(self) -> None:
        self.decoder = ThreadPoolExecutor(max(1, self.settings.decode_threads), thread_name_prefix="convlab-decode")
        for batcher in self.batchers.values():
            batcher.start()

    def stop(self) -> None:
        for batcher in self.batchers.values():
            batcher.stop()
        if self.decoder is not None:
            self.decoder.shutdown(wait=True, cancel_futures=True)
        self.metrics.close()

    def ready(self) -> bool:
        return all(batcher.running for batcher in self.batchers.values())

    async def decode_all(self, model, images: list[bytes]) -> np.ndarray:
        """The batch the model's infer takes (a classifier's (N, C, H, W) uint8): decoded and resized in the
        decoding threads, so it overlaps the model's forward passes; one image declaring few pixels is decoded
        here, in the event loop: the hop to a thread costs more than it. Only its header is read here before
        choosing."""
        max_pixels = self.settings.max_pixels
        loop = asyncio.get_running_loop()
        if len(images) == 1:  # without gather's overhead
            image = open_upload(images[0], max_pixels)
            if declared_pixels(image) <= INLINE_DECODE_PIXELS:
                return model.collate([model.decode(image, max_pixels)])
            return model.collate([await loop.run_in_executor(self.decoder, model.decode, image, max_pixels)])
        return model.collate(await asyncio.gather(*(loop.run_in_executor(self.decoder, model.decode, data, max_pixels)
                                                    for data in images)))


# `async def`: FastAPI runs a plain `def` dependency in a worker thread, a thread hop on every request
async def server_state(request: Request) -> ServerState:
    return request.app.state.serve


State = Annotated[ServerState, Depends(server_state)]

