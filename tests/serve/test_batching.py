"""The dynamic batcher: batches form from what waits, results go back to their own request, limits hold."""
from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from convlab.serve.batching import Batcher, DeadlineExceeded, QueueFull


def test_mixed_requests_get_their_own_rows(served, digits_run):
    """Jobs of 1, 3 and 2 images queued before the thread starts run as one batch; each gets its rows."""
    sizes = []
    batcher = Batcher(served.infer, max_batch=32, max_delay_s=0.01, on_batch=sizes.append)
    images = digits_run.test_data().images[:6]
    jobs = [batcher.submit(part, time.monotonic() + 10) for part in (images[:1], images[1:4], images[4:])]
    batcher.start()
    try:
        results = [job.future.result(timeout=10) for job in jobs]
    finally:
        batcher.stop()
    assert sizes == [6]
    expected = digits_run.predict_arrays(images)
    np.testing.assert_allclose(np.concatenate([probs for _, probs in results]), expected, atol=1e-6)
    assert [len(probs) for _, probs in results] == [1, 3, 2]


def test_max_batch_splits_and_dtypes_do_not_mix(served, digits_run):
    sizes = []
    batcher = Batcher(served.infer, max_batch=4, max_delay_s=0.0, on_batch=sizes.append)
    images = digits_run.test_data().images[:3]
    floats = np.zeros((2, 1, 8, 8), dtype=np.float32)
    jobs = [batcher.submit(images[i:i + 1], time.monotonic() + 10) for i in range(3)]
    jobs.append(batcher.submit(floats, time.monotonic() + 10))
    jobs += [batcher.submit(images[i:i + 1], time.monotonic() + 10) for i in range(3)]
    batcher.start()
    try:
        [job.future.result(timeout=10) for job in jobs]
    finally:
        batcher.stop()
    assert sizes == [3, 2, 3]  # uint8 images, then the float inputs, then images again
    np.testing.assert_allclose(jobs[3].future.result()[0], digits_run.forward_inputs(floats), atol=1e-6)


def test_waits_up_to_max_delay_for_requests_on_their_way(served, digits_run):
    sizes = []
    batcher = Batcher(served.infer, max_batch=8, max_delay_s=0.5, on_batch=sizes.append)
    batcher.start()
    image = digits_run.test_data().images[:1]
    try:
        with batcher.coming():  # a second request is being decoded
            first = batcher.submit(image, time.monotonic() + 10)
            time.sleep(0.05)
            second = batcher.submit(image, time.monotonic() + 10)
        first.future.result(timeout=10), second.future.result(timeout=10)
        started = time.monotonic()
        batcher.submit(image, time.monotonic() + 10).future.result(timeout=10)
        alone = time.monotonic() - started
    finally:
        batcher.stop()
    assert sizes == [2, 1]
    assert alone < 0.4  # nothing on its way: the lone request did not wait out the 0.5 s delay


def test_queue_full_and_expired_jobs(served, digits_run):
    batcher = Batcher(served.infer, max_queue=2)
    image = digits_run.test_data().images[:1]
    expired = batcher.submit(image, time.monotonic() - 1)
    batcher.submit(image, time.monotonic() + 10)
    with pytest.raises(QueueFull, match="--max-queue 2"):
        batcher.submit(image, time.monotonic() + 10)
    sizes = []
    batcher.on_batch = sizes.append
    batcher.start()
    try:
        with pytest.raises(DeadlineExceeded):
            expired.future.result(timeout=10)
        time.sleep(0.05)
    finally:
        batcher.stop()
    assert sizes == [1]  # only the job in time ran


def test_async_wait_gives_up_at_the_deadline(served, digits_run):
    batcher = Batcher(served.infer)  # not started: nothing runs the job
    with pytest.raises(DeadlineExceeded):
        asyncio.run(batcher.run(digits_run.test_data().images[:1], 0.05))
    assert batcher.submit(digits_run.test_data().images[:1], time.monotonic() + 1).future.cancel()
