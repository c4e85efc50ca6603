"""Large scoring bodies are decoded and checked in worker processes, a few at a time.

Decoding a 15 MB JSON body holds the interpreter lock for the whole call, so a thread
would still stall the event loop; a worker process does not. Small bodies never come
here: the scoring app parses them inline, as before.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import numpy as np

from modelferry.serving.payload import PayloadError, parse_request
from modelferry.serving.schema import InputSchema

log = logging.getLogger(__name__)

# Bodies above this many bytes are parsed off the event loop (a 1000-row request of 30
# columns is about 200 KiB, so the requests scored inline stay inline).
OFFLOAD_BYTES = 256 * 1024
# How many large requests are parsed and scored at once; more are answered 503 with
# Retry-After, because queueing 16 MB bodies would only move the memory problem.
LARGE_CONCURRENCY = 2
RETRY_AFTER_SECONDS = 1
# How often a worker checks that the server that started it is still there.
_PARENT_CHECK_SECONDS = 1.0


class LargeRequestPool:
    """A bounded pool of worker processes for large bodies; refuses when it is full.

    Call `try_enter()` on the event loop; if it returns True, await `parse()` and call
    `leave()` afterwards (in a `finally`). Workers start on the first large request.
    """

    def __init__(self, concurrency: int = LARGE_CONCURRENCY) -> None:
        """Allow `concurrency` large requests at once."""
        self.concurrency = concurrency
        self._active = 0
        self._executor: ProcessPoolExecutor | None = None

    def try_enter(self) -> bool:
        """Take a slot if one is free; never waits."""
        if self._active >= self.concurrency:
            return False
        self._active += 1
        return True

    def leave(self) -> None:
        """Give back the slot `try_enter()` took."""
        self._active -= 1

    async def parse(self, body: bytes, schema: InputSchema, max_rows: int) -> np.ndarray:
        """`parse_request` in a worker process; raises the same `PayloadError`."""
        if self._executor is None:
            # spawn, not fork: the server runs threads, and a forked child could inherit
            # a lock some thread held.
            context = multiprocessing.get_context("spawn")
            self._executor = ProcessPoolExecutor(
                self.concurrency,
                mp_context=context,
                initializer=_exit_with_parent,
                initargs=(os.getpid(),),
            )
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, parse_request, body, schema, max_rows)
        except BrokenProcessPool:
            # A worker died (killed, out of memory): start afresh on the next request.
            log.error("a large-request worker died; its pool is restarted")
            self.close()
            raise PayloadError(
                "the request could not be parsed: a worker stopped; retry shortly", 503
            ) from None

    def close(self) -> None:
        """Stop the worker processes; idempotent."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None


def _exit_with_parent(parent: int) -> None:
    """Worker initializer: exit as soon as the server process is gone.

    A server stopped with SIGKILL runs no clean-up, and its workers would otherwise wait
    on their queue forever, each holding a process and its memory.
    """

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(_PARENT_CHECK_SECONDS)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
