"""Delivery records written from async code: on one thread, in order, batched.

A rollout writes thousands of small transitions from one event loop. Each write goes on a
queue; one thread takes everything queued and writes it in one transaction, so the loop
never waits on the database, SQLite never sees two writers from this process, and a
delivery's transitions are written in the order they happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

from modelferry.delivery.records.store import DeliveryRecord, DeliveryRecords
from modelferry.errors import DeliveryError

P = ParamSpec("P")
T = TypeVar("T")

#: The most writes one transaction of the writer takes.
MAX_BATCH = 500


@dataclass
class _Call:
    function: Callable[[], Any]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]

    def settle(self, result: Any, error: BaseException | None) -> None:
        def resolve() -> None:
            if self.future.done():  # the caller was cancelled; the write still happened
                return
            if error is not None:
                self.future.set_exception(error)
            else:
                self.future.set_result(result)

        # A closed loop has nobody waiting any more.
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(resolve)


class AsyncDeliveryRecords:
    """The writes of `DeliveryRecords` for async code: on one thread, in call order, batched.

    One thread means SQLite never sees two writers from this process and the transitions
    of a delivery are written in the order they happened. Writes queued while a batch is
    being written go into the next batch, one transaction for all of them; when a batch
    fails, its writes are retried one by one so each caller gets its own answer.
    """

    def __init__(self, records: DeliveryRecords) -> None:
        self.records = records
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._closed = False
        self._thread = threading.Thread(target=self._work, name="delivery-records", daemon=True)
        self._thread.start()

    async def _call(self, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        if self._closed:
            raise DeliveryError("the delivery record writer is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._calls.put(_Call(functools.partial(function, *args, **kwargs), loop, future))
        return await future

    async def create(self, **fields: Any) -> DeliveryRecord:
        """`DeliveryRecords.create`, off the event loop."""
        return await self._call(self.records.create, **fields)

    async def transition(self, delivery_id: str, state: str, **fields: Any) -> bool:
        """`DeliveryRecords.transition`, off the event loop."""
        return await self._call(self.records.transition, delivery_id, state, **fields)

    def close(self) -> None:
        """Write what is queued, then stop the writer thread (the records stay open)."""
        if not self._closed:
            self._closed = True
            self._calls.put(None)
        self._thread.join()

    def _work(self) -> None:
        while True:
            first = self._calls.get()
            if first is None:
                return
            batch = [first]
            stop = False
            while len(batch) < MAX_BATCH:
                try:
                    call = self._calls.get_nowait()
                except queue.Empty:
                    break
                if call is None:
                    stop = True
                    break
                batch.append(call)
            self._write(batch)
            if stop:
                return

    def _write(self, batch: list[_Call]) -> None:
        if len(batch) > 1:
            try:
                with self.records.batch():
                    results = [call.function() for call in batch]
            except Exception:
                pass
            else:
                for call, result in zip(batch, results, strict=True):
                    call.settle(result, None)
                return
        for call in batch:
            try:
                result = call.function()
            except Exception as exc:
                call.settle(None, exc)
            else:
                call.settle(result, None)
