"""Progress artifacts: a library progress callback shown as a Prefect progress bar.

The library tells ``(done, total)`` from wherever its work runs: the fleet's event loop
(on the task runner's thread) or batch scoring's worker threads. None of them may wait on
the Prefect API, and Prefect's artifact functions return an unawaited coroutine when
called from async code. So the callback only stores the value; one sender thread of the
flow's own updates the artifact: at most once per `min_interval` seconds and only once it
moved by `min_step` percent, then a last time as the work ends. A fleet of 100,000
devices costs the API about one request a second, whatever the fleet does.
"""

from __future__ import annotations

import contextvars
import re
import threading
from types import TracebackType
from uuid import UUID

from prefect import get_run_logger
from prefect.artifacts import create_progress_artifact, update_progress_artifact

from tasks.sync_calls import call_sync


def artifact_key(text: str) -> str:
    """`text` as an artifact key: lowercase letters, digits and dashes only."""
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")


class LiveProgressArtifact:
    """A progress artifact of the current flow run, fed by a `ProgressCallback`.

    Created at 0 % when entered; call the object as ``(done, total)`` from any thread or
    event loop. Leaving the ``with`` block sends the last value told: 100 % for work that
    completed, the value reached for work that failed. The description says what the
    work is and how far it got (e.g. "Fleet delivery of edge-bc 3.0.0 to test: 2 of 3
    devices done"). A failing API is logged once, as a warning, and never fails the run.

    Args:
        key: the artifact key (see `artifact_key`).
        description: what the work is.
        unit: what `done` and `total` count, e.g. "devices done".
        min_interval: the least time between two updates, in seconds.
        min_step: the least change, in percent, worth an update before the end.
    """

    def __init__(
        self,
        key: str,
        description: str,
        unit: str,
        *,
        min_interval: float = 1.0,
        min_step: float = 1.0,
    ) -> None:
        self.key = key
        self.description = description
        self.unit = unit
        self.updates = 0
        self.artifact_id: UUID | None = None
        self._min_interval = min_interval
        self._min_step = min_step
        self._logger = get_run_logger()
        self._lock = threading.Lock()
        self._latest: tuple[int, int] | None = None
        self._sent: tuple[int, int] | None = None
        self._sent_percent = 0.0
        self._warned = False
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> LiveProgressArtifact:
        # Created here, in the flow's thread, so the artifact belongs to the flow run.
        # Sync: Prefect's functions return a coroutine when they think they are in async
        # code; this must create the artifact now.
        self.artifact_id = call_sync(
            create_progress_artifact, 0.0, key=self.key, description=self.description
        )
        # The sender runs in a copy of this context: the same API settings and client.
        context = contextvars.copy_context()
        self._thread = threading.Thread(
            target=context.run, args=(self._run,), name=f"progress-{self.key}", daemon=True
        )
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._closed.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()

    def __call__(self, done: int, total: int) -> None:
        """Take ``(done, total)``; returns at once, whatever the API is doing."""
        with self._lock:
            self._latest = (done, total)
        self._wake.set()

    def _run(self) -> None:
        while not self._closed.is_set():
            self._wake.wait()
            self._wake.clear()
            if self._closed.is_set():
                break
            self._send(final=False)
            # Waits out the interval, but not past the end of the work.
            self._closed.wait(self._min_interval)
        self._send(final=True)

    def _send(self, final: bool) -> None:
        with self._lock:
            latest = self._latest
        if latest is None or latest == self._sent or self.artifact_id is None:
            return
        done, total = latest
        percent = 100.0 if total <= 0 else min(100.0, 100.0 * done / total)
        small = abs(percent - self._sent_percent) < self._min_step and percent < 100.0
        # The first value is sent at once: it says how much work there is.
        if small and not final and self._sent is not None:
            return
        try:
            call_sync(
                update_progress_artifact,
                self.artifact_id,
                round(percent, 2),
                description=f"{self.description}: {done:,} of {total:,} {self.unit}",
            )
        # A progress bar is not worth failing, or even slowing, the run for.
        except Exception as exc:
            if not self._warned:
                self._warned = True
                self._logger.warning(
                    "Progress artifact %r not updated: %s: %s", self.key, type(exc).__name__, exc
                )
            return
        self._sent = latest
        self._sent_percent = percent
        self.updates += 1
