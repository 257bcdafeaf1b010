"""One bounded queue in front of the models, drained by one worker that runs compatible requests as one batch.

Every model call of the server goes through here: the event loop never runs a model, at most `queue_size` requests
wait (a full queue answers 503 at once instead of letting memory grow with the load), and the worker takes up to
`max_batch` waiting requests that can share a batch (same kind and settings) and runs them together — dynamic
batching, which is where a CPU or GPU serves several users faster than one at a time. Model work runs in a single
thread, so the engines are never used from two threads at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)


class ShuttingDown(Exception):
    """The server is stopping: requests still waiting are answered at once instead of being cut off."""


class QueueFull(Exception):
    """The request queue is full: the client should retry after `retry_after` seconds."""

    def __init__(self, waiting: int, retry_after: int) -> None:
        super().__init__(f"the server is busy: {waiting} requests are waiting; retry in {retry_after} s")
        self.retry_after = retry_after


@dataclass
class Job:
    """One request for the model: `key` says which jobs may share a batch, `payload` is what the runner gets."""

    key: Hashable
    payload: Any
    future: asyncio.Future = field(repr=False, default=None)  # type: ignore[assignment]


class BatchingWorker:
    """`await worker.submit(key, payload)` → the runner's result for that payload.

    Args:
        runner: called in the worker thread with a list of payloads that share a key; returns one result per
            payload, in order (an exception for the whole batch is retried payload by payload, so one bad
            request cannot fail the others).
        queue_size: requests allowed to wait; one more raises `QueueFull`.
        max_batch: payloads per runner call.
    """

    def __init__(self, runner: Callable[[Hashable, Sequence[Any]], list[Any]], *, queue_size: int,
                 max_batch: int) -> None:  # fmt: skip
        self.runner, self.queue_size, self.max_batch = runner, queue_size, max_batch
        self.queue: asyncio.Queue[Job] | None = None
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hikari-model")
        self.task: asyncio.Task | None = None
        self.seconds_per_batch = 1.0  # running mean, for Retry-After
        self.batches = 0
        self.items = 0
        self.closing = False

    async def start(self) -> None:
        self.queue = asyncio.Queue(maxsize=self.queue_size)
        self.task = asyncio.create_task(self._loop(), name="hikari-batching-worker")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        self.executor.shutdown(wait=True, cancel_futures=True)

    @property
    def waiting(self) -> int:
        return self.queue.qsize() if self.queue is not None else 0

    def shut(self) -> None:
        """Begin stopping (call on the event loop): refuse new requests and fail the waiting ones with
        `ShuttingDown`; the batch already running finishes and is answered."""
        self.closing = True
        while self.queue is not None and not self.queue.empty():
            job = self.queue.get_nowait()
            if not job.future.done():
                job.future.set_exception(ShuttingDown("the server is shutting down; send the request again later"))

    async def submit(self, key: Hashable, payload: Any) -> Any:
        assert self.queue is not None, "the worker has not been started"
        if self.closing:
            raise ShuttingDown("the server is shutting down; send the request again later")
        job = Job(key, payload, asyncio.get_running_loop().create_future())
        try:
            self.queue.put_nowait(job)
        except asyncio.QueueFull:
            waiting = self.queue.qsize()
            raise QueueFull(waiting, max(1, round(self.seconds_per_batch * (1 + waiting / self.max_batch)))) from None
        return await job.future

    async def _loop(self) -> None:
        assert self.queue is not None
        carry: Job | None = None
        loop = asyncio.get_running_loop()
        while True:
            first = carry or await self.queue.get()
            carry = None
            batch = [first]
            while len(batch) < self.max_batch and not self.queue.empty():
                job = self.queue.get_nowait()
                if job.key == first.key:
                    batch.append(job)
                else:  # another kind of request: it opens the next batch
                    carry = job
                    break
            live = [job for job in batch if not job.future.done()]  # a client that went away cancelled its future
            if not live:
                continue
            start = loop.time()
            results = await loop.run_in_executor(self.executor, self._run, first.key, [j.payload for j in live])
            self.seconds_per_batch = 0.8 * self.seconds_per_batch + 0.2 * (loop.time() - start)
            self.batches += 1
            self.items += len(live)
            for job, (ok, value) in zip(live, results, strict=True):
                if job.future.done():
                    continue
                if ok:
                    job.future.set_result(value)
                else:
                    job.future.set_exception(value)

    def _run(self, key: Hashable, payloads: list[Any]) -> list[tuple[bool, Any]]:
        """(ok, result or exception) per payload; a failed batch is retried one payload at a time."""
        try:
            return [(True, r) for r in self.runner(key, payloads)]
        except Exception as err:  # noqa: BLE001 - reported to each request, never to the loop
            if len(payloads) == 1:
                return [(False, err)]
            logger.warning("a batch of %d failed (%s); running its requests one by one", len(payloads), err)
            return [self._run(key, [p])[0] for p in payloads]
