"""Dynamic batching, one queue per model: requests waiting are run together in one forward pass on a
dedicated thread; a full queue refuses (503), a request past its deadline is dropped unrun (504).

Why batching: on a CPU one forward pass of 32 images costs far less than 32 passes of one (the weights are
read once, the kernels vectorize over the batch); Triton's dynamic batcher is the model for this.
"""
from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from concurrent.futures import Future
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch


class QueueFull(Exception):
    """The model's queue holds --max-queue requests already (answered 503 with Retry-After)."""


class DeadlineExceeded(Exception):
    """The request waited past --timeout-s and was not run (answered 504)."""


@dataclass
class Job:
    """One request's images (n, ...): a classifier's (n, C, H, W) uint8 images or float32 inputs, a detector's
    n decoded images (an object array); its result goes to `future`."""

    batch: np.ndarray
    deadline: float  # time.monotonic() after which it is not run
    arrived: float = field(default_factory=time.monotonic)
    future: Future = field(default_factory=Future)


class Batcher:
    """A queue of jobs and the thread that runs them in forward passes of at most `max_batch` images.

    A batch starts with the oldest job and takes the jobs behind it while they fit, waiting at most
    `max_delay_s` after the oldest job arrived for more to come, and only while requests are on their way
    (being read or decoded: `coming`), so a lone request runs at once. Jobs of another dtype than the first
    wait for the next batch. A job of more than `max_batch` images runs alone, in several passes. Each job
    gets back the rows of its own images.
    """

    def __init__(self, infer: Callable[[np.ndarray], tuple[np.ndarray, ...]], max_batch: int = 32,
                 max_delay_s: float = 0.002, max_queue: int = 256, threads: int = 1,
                 on_batch: Callable[[int], None] | None = None, name: str = "model",
                 on_depth: Callable[[int], None] | None = None):
        self.infer, self.max_batch, self.max_delay_s, self.max_queue = infer, max_batch, max_delay_s, max_queue
        self.threads, self.on_batch, self.name, self.on_depth = threads, on_batch, name, on_depth
        self._queue: deque[Job] = deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._coming = 0  # requests that will submit soon (their images are being decoded)
        self._mailbox: _Mailbox | None = None  # the results on their way to the event loop

    # -- the request side ------------------------------------------------------------------------------
    def coming(self) -> "_Coming":
        """`with batcher.coming():` around the work before submit, so a forming batch waits for it."""
        return _Coming(self)

    def submit(self, batch: np.ndarray, deadline: float) -> Job:
        """Queue a job, or raise QueueFull. Jobs whose caller gave up are dropped first."""
        job = Job(batch, deadline)
        with self._cond:
            if len(self._queue) >= self.max_queue:
                self._drop_cancelled()
            if len(self._queue) >= self.max_queue:
                raise QueueFull(f"model {self.name}: {len(self._queue)} requests are waiting (--max-queue "
                                f"{self.max_queue}); retry shortly")
            self._queue.append(job)
            if len(self._queue) == 1 or self._count_fitting() >= self.max_batch:
                self._cond.notify()  # only what can end the thread's wait: every wake-up costs a GIL hand-off
            if self.on_depth is not None:
                self.on_depth(len(self._queue))
        return job

    async def run(self, batch: np.ndarray, timeout_s: float) -> tuple[np.ndarray, ...]:
        """Queue `batch` and wait for what `infer` gives for its rows (a classifier's (logits, probabilities));
        DeadlineExceeded when not run in time."""
        job = self.submit(batch, time.monotonic() + timeout_s)
        loop = asyncio.get_running_loop()
        answer = loop.create_future()
        if self._mailbox is None or self._mailbox.loop is not loop:
            self._mailbox = _Mailbox(loop)
        mailbox = self._mailbox

        def deliver(done: Future) -> None:  # on the inference thread: hand the result to the event loop
            mailbox.post(answer, done)

        def expire() -> None:
            if job.future.cancel():  # still queued: it will never run
                answer.set_exception(DeadlineExceeded(f"model {self.name}: not run within {timeout_s:g} s "
                                                      f"(--timeout-s); the server is overloaded"))
            # else it is running: its result is a moment away

        job.future.add_done_callback(deliver)
        timer = loop.call_later(timeout_s, expire)
        try:
            return await answer
        except asyncio.CancelledError:  # the client left: do not run its images if they still wait
            job.future.cancel()
            raise
        finally:
            timer.cancel()

    @property
    def depth(self) -> int:
        return len(self._queue)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- the model side --------------------------------------------------------------------------------
    def start(self) -> None:
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name=f"convlab-infer-{self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Finish the batch in progress, refuse what is queued, end the thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()
        with self._cond:
            while self._queue:
                job = self._queue.popleft()
                if job.future.set_running_or_notify_cancel():
                    job.future.set_exception(QueueFull(f"model {self.name}: the server is stopping"))

    def _loop(self) -> None:
        torch.set_num_threads(self.threads)  # per thread: a new thread does not inherit the caller's count
        with torch.inference_mode():
            while True:
                jobs = self._take()
                if jobs is None:
                    return
                if jobs:
                    self._run(jobs)

    def _take(self) -> list[Job] | None:
        """The next batch's jobs (marked running), [] if all waiting ones were dropped, None when stopping."""
        with self._cond:
            while not self._queue and not self._stopping:
                self._cond.wait()
            if self._stopping:
                return None
            close = self._queue[0].arrived + self.max_delay_s
            while self._coming > 0 and self._count_fitting() < self.max_batch and not self._stopping:
                left = close - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            jobs, images, now = [], 0, time.monotonic()
            dtype = self._queue[0].batch.dtype
            while self._queue:
                job = self._queue[0]
                if job.future.cancelled():
                    self._queue.popleft()
                    continue
                if jobs and (images + len(job.batch) > self.max_batch or job.batch.dtype != dtype):
                    break
                self._queue.popleft()
                if now > job.deadline:
                    if job.future.set_running_or_notify_cancel():
                        job.future.set_exception(DeadlineExceeded(
                            f"model {self.name}: not run before the request's deadline (--timeout-s)"))
                    continue
                if job.future.set_running_or_notify_cancel():
                    jobs.append(job)
                    images += len(job.batch)
            if self.on_depth is not None:
                self.on_depth(len(self._queue))
            return jobs

    def _count_fitting(self) -> int:
        return sum(len(job.batch) for job in self._queue)

    def _drop_cancelled(self) -> None:
        self._queue = deque(job for job in self._queue if not job.future.cancelled())

    def _run(self, jobs: list[Job]) -> None:
        mailbox = self._mailbox
        with mailbox.holding() if mailbox is not None else nullcontext():
            self._answer(jobs)

    def _answer(self, jobs: list[Job]) -> None:
        batch = jobs[0].batch if len(jobs) == 1 else np.concatenate([job.batch for job in jobs])
        try:
            outputs = self._forward(batch)
        except Exception as err:  # noqa: BLE001 - the model's failure goes to each request, the thread lives on
            for job in jobs:
                job.future.set_exception(err)
            return
        start = 0
        for job in jobs:
            end = start + len(job.batch)
            job.future.set_result(tuple(output[start:end] for output in outputs))
            start = end

    def _forward(self, batch: np.ndarray) -> tuple[np.ndarray, ...]:
        """`infer`'s outputs (one row per image) in forward passes of at most max_batch images: only a job
        larger than max_batch (one request of many images) takes more than one."""
        parts = []
        for start in range(0, len(batch), self.max_batch):
            part = batch[start:start + self.max_batch]
            parts.append(self.infer(part))
            if self.on_batch is not None:
                self.on_batch(len(part))
        if len(parts) == 1:
            return parts[0]
        return tuple(np.concatenate(column) for column in zip(*parts))


class _Mailbox:
    """Results handed from the inference thread to one event loop: the loop is woken once for all the
    results of a batch (one hand-off of the GIL to the loop, not one per request)."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop, self.lock, self.pending, self.held = loop, threading.Lock(), [], False

    def post(self, answer: asyncio.Future, done: Future) -> None:
        with self.lock:
            self.pending.append((answer, done))
            wake = len(self.pending) == 1 and not self.held
        if wake:
            self.loop.call_soon_threadsafe(self.drain)

    @contextmanager
    def holding(self):
        """Posts wait for the end of the block: waking the loop hands it the GIL (the wake-up is a write
        to a socket), and it would then take the batch's results one by one."""
        with self.lock:
            self.held = True
        try:
            yield
        finally:
            with self.lock:
                self.held = False
                wake = bool(self.pending)
            if wake:
                self.loop.call_soon_threadsafe(self.drain)

    def drain(self) -> None:
        with self.lock:
            pending, self.pending = self.pending, []
        for answer, done in pending:
            _settle(answer, done)


def _settle(answer: asyncio.Future, done: Future) -> None:
    if answer.done() or done.cancelled():  # expired: the answer is DeadlineExceeded already
        return
    error = done.exception()
    if error is not None:
        answer.set_exception(error)
    else:
        answer.set_result(done.result())


class _Coming:
    def __init__(self, batcher: Batcher):
        self.batcher = batcher

    def __enter__(self):
        with self.batcher._cond:
            self.batcher._coming += 1

    def __exit__(self, *exc):
        with self.batcher._cond:
            self.batcher._coming -= 1
            if self.batcher._coming == 0:  # a forming batch waits while requests are on their way
                self.batcher._cond.notify()
