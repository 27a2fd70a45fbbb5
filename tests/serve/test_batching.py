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


def test_waits_for_requests_on_their_way_and_never_for_none(served, digits_run):
    """A forming batch waits for a request being decoded; with nothing on its way a lone request runs at
    once: with a 10-minute max delay, it could not be answered otherwise."""
    sizes = []
    batcher = Batcher(served.infer, max_batch=8, max_delay_s=600, on_batch=sizes.append)
    batcher.start()
    image = digits_run.test_data().images[:1]
    try:
        with batcher.coming():  # a second request is being decoded
            first = batcher.submit(image, time.monotonic() + 600)
            time.sleep(0.05)
            second = batcher.submit(image, time.monotonic() + 600)
        first.future.result(timeout=60), second.future.result(timeout=60)
        batcher.submit(image, time.monotonic() + 600).future.result(timeout=60)
    finally:
        batcher.stop()
    assert sizes == [2, 1]


def test_max_batch_is_a_cap_on_one_large_request(served, digits_run):
    """One job of 70 images with max_batch 32 runs as passes of 32, 32 and 6, and gets all its rows back."""
    passes = []

    def infer(batch):
        passes.append(len(batch))
        return served.infer(batch)

    batcher = Batcher(infer, max_batch=32, max_delay_s=0.0)
    images = np.concatenate([digits_run.test_data().images] * 2)[:70]
    job = batcher.submit(images, time.monotonic() + 60)
    batcher.start()
    try:
        logits, probs = job.future.result(timeout=60)
    finally:
        batcher.stop()
    assert passes == [32, 32, 6]
    assert logits.shape[0] == probs.shape[0] == 70
    np.testing.assert_allclose(probs, digits_run.predict_arrays(images), atol=1e-6)


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


def test_a_request_over_max_batch_is_served_in_several_passes(make_client, digit_pngs, digits_run):
    """--max-batch 4 and one /predict of 12 images: three forward passes of 4 (the batch-size histogram),
    and the 12 answers are predict's."""
    client = make_client(max_batch=4)
    files = [("file", (path.name, path.read_bytes(), "image/png")) for path in digit_pngs]
    answer = client.post("/predict/digits", files=files)
    assert answer.status_code == 200 and len(answer.json()) == len(digit_pngs)
    text = client.get("/metrics").text
    assert 'convlab_batch_size_count{model="digits"} 3.0' in text
    assert 'convlab_batch_size_bucket{le="4.0",model="digits"} 3.0' in text
    expected = digits_run.predict_arrays(digits_run.test_data().images[:len(digit_pngs)]).argmax(1)
    assert [row["top"][0]["label"] for row in answer.json()] == [digits_run.classes[i] for i in expected]


def test_a_batch_wakes_the_event_loop_once_not_once_per_request(served, digits_run):
    """The 8 results of one forward pass reach the event loop in fewer wake-ups than 8 (each wake-up is a
    hand-off of the GIL between the inference thread and the loop), and each request gets its own rows."""
    sizes = []
    batcher = Batcher(served.infer, max_batch=32, max_delay_s=0.0, on_batch=sizes.append)
    images = digits_run.test_data().images[:8]

    async def main():
        loop = asyncio.get_running_loop()
        wakeups = []
        original = loop.call_soon_threadsafe

        def counted(*args, **kwargs):
            wakeups.append(args[0])
            return original(*args, **kwargs)

        loop.call_soon_threadsafe = counted
        tasks = [asyncio.create_task(batcher.run(images[i:i + 1], 60)) for i in range(8)]
        await asyncio.sleep(0.05)  # all 8 queued before the thread starts: one batch
        batcher.start()
        results = await asyncio.gather(*tasks)
        return wakeups, results

    try:
        wakeups, results = asyncio.run(main())
    finally:
        batcher.stop()
    assert sizes == [8]
    assert 1 <= len(wakeups) < 8
    expected = digits_run.predict_arrays(images)
    np.testing.assert_allclose(np.concatenate([probs for _, probs in results]), expected, atol=1e-6)
