"""BatchingWorker: compatible requests share a batch, a full queue refuses at once, one bad request fails alone."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Hashable, Sequence
from typing import Any

import pytest

from hikari.serve.worker import BatchingWorker, QueueFull


class Recorder:
    def __init__(self, gate: threading.Event | None = None) -> None:
        self.calls: list[tuple[Hashable, list[Any]]] = []
        self.gate = gate

    def __call__(self, key: Hashable, payloads: Sequence[Any]) -> list[Any]:
        if self.gate is not None:
            self.gate.wait(10)
        self.calls.append((key, list(payloads)))
        if any(p == "bad" for p in payloads):
            raise ValueError("bad payload")
        return [f"{key}:{p}" for p in payloads]


async def run_all(worker: BatchingWorker, jobs: list[tuple[str, str]], gate: threading.Event) -> list[Any]:
    await worker.start()
    try:
        tasks = [asyncio.create_task(worker.submit(*jobs[0]))]
        await asyncio.sleep(0.05)  # the worker holds the first job (the runner waits at the gate) …
        tasks += [asyncio.create_task(worker.submit(k, p)) for k, p in jobs[1:]]
        await asyncio.sleep(0.05)  # … while the rest queue up behind it
        gate.set()
        return await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        await worker.stop()


def test_waiting_requests_with_the_same_key_share_a_batch() -> None:
    gate = threading.Event()
    runner = Recorder(gate)
    worker = BatchingWorker(runner, queue_size=16, max_batch=3)
    jobs = [("a", "0"), ("a", "1"), ("a", "2"), ("a", "3"), ("a", "4"), ("b", "5"), ("a", "6")]
    results = asyncio.run(run_all(worker, jobs, gate))
    assert results == [f"{k}:{p}" for k, p in jobs]  # each request gets its own answer
    # the first job runs alone (taken before the rest arrived); then batches of ≤ 3, each closed at a key change
    assert [(k, p) for k, p in runner.calls] == [("a", ["0"]), ("a", ["1", "2", "3"]), ("a", ["4"]), ("b", ["5"]),
                                                 ("a", ["6"])]  # fmt: skip
    assert worker.batches == 5 and worker.items == 7


def test_a_failing_request_fails_alone() -> None:
    gate = threading.Event()
    runner = Recorder(gate)
    results = asyncio.run(run_all(BatchingWorker(runner, queue_size=8, max_batch=4),
                                  [("a", "0"), ("a", "1"), ("a", "bad"), ("a", "3")], gate))  # fmt: skip
    assert results[:2] == ["a:0", "a:1"] and results[3] == "a:3"
    assert isinstance(results[2], ValueError)


def test_a_full_queue_refuses_with_a_retry_time() -> None:
    gate = threading.Event()
    worker = BatchingWorker(Recorder(gate), queue_size=2, max_batch=1)

    async def scenario() -> list[Any]:
        await worker.start()
        try:
            first = asyncio.create_task(worker.submit("a", "0"))
            await asyncio.sleep(0.05)  # the worker holds it
            waiting = [asyncio.create_task(worker.submit("a", str(i))) for i in (1, 2)]
            await asyncio.sleep(0)
            with pytest.raises(QueueFull, match="2 requests are waiting") as refused:
                await worker.submit("a", "3")
            assert refused.value.retry_after >= 1
            gate.set()
            return await asyncio.gather(first, *waiting)
        finally:
            await worker.stop()

    assert asyncio.run(scenario()) == ["a:0", "a:1", "a:2"]
