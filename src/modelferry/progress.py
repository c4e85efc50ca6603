"""Progress of long work (a fleet delivery, a batch) told to a plain callback.

    on_progress(done, total)

The contract a `ProgressReporter` keeps for its callback:

- the first call is ``(0, total)``, as the work starts; `done` never goes down and
  never passes `total`; when the work completes the last call is ``(total, total)``;
  when it fails the calls stop at the value reached;
- in between, at most one call per percent of `total`, so a fleet of 100,000 devices
  or a million small chunks make about a hundred calls;
- calls come one at a time (under a lock), from whichever thread made progress: the
  callback should return quickly (hand the value off; no network calls);
- an exception the callback raises is logged once, as a warning, and never reaches the
  work: a progress bar is not worth a failed delivery.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

#: Told ``(done, total)`` as work advances; see the module docstring for the contract.
ProgressCallback = Callable[[int, int], None]

_log = logging.getLogger(__name__)


class ProgressReporter:
    """Counts work done and tells a `ProgressCallback`, throttled to one call per percent.

    Args:
        callback: told ``(done, total)``; None makes every method a cheap no-op.
        total: how much work there is (devices, rows); 0 is complete from the start.
        what: names the work in the warning logged when the callback fails.
        log: where that warning goes.
    """

    def __init__(
        self,
        callback: ProgressCallback | None,
        total: int,
        *,
        what: str = "work",
        log: logging.Logger | logging.LoggerAdapter[Any] | None = None,
    ) -> None:
        self.total = max(0, total)
        self._callback = callback
        self._what = what
        self._log = log or _log
        self._lock = threading.Lock()
        self._done = 0
        self._told: int | None = None
        self._warned = False

    @property
    def done(self) -> int:
        """The work counted so far."""
        return self._done

    def start(self) -> None:
        """Tell ``(0, total)``: the work begins, and how much there is."""
        with self._lock:
            self._tell()

    def advance(self, amount: int = 1) -> None:
        """Count `amount` more done (capped at `total`); tell it if a percent was crossed."""
        if amount <= 0:
            return
        with self._lock:
            self._done = min(self.total, self._done + amount)
            if self._told is None or self._percent(self._done) > self._percent(self._told):
                self._tell()

    def finish(self) -> None:
        """Count everything done and tell ``(total, total)`` (once, however often called)."""
        with self._lock:
            self._done = self.total
            if self._told != self.total:
                self._tell()

    def _percent(self, value: int) -> int:
        return 100 if self.total == 0 else value * 100 // self.total

    def _tell(self) -> None:
        self._told = self._done
        if self._callback is None:
            return
        try:
            self._callback(self._done, self.total)
        # Whatever a progress display does wrong is its own problem, never the work's.
        except Exception as exc:
            if not self._warned:
                self._warned = True
                self._log.warning(
                    "Progress of %s is not shown: its callback raised %s: %s; the %s goes on",
                    self._what, type(exc).__name__, exc, self._what,
                )  # fmt: skip
