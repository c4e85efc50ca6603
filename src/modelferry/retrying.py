"""The one retry policy of modelferry: exponential backoff with full jitter, on tenacity.

Every retry loop of the library (the edge agent's sends and reconnects, package downloads,
Blob Storage uploads, webhook notifications, the MQTT reconnect) waits the same way: after
failed attempt n, a random time between 0 and `min(maximum, initial * 2 ** (n - 1))`.

    backoff = Backoff(initial=0.5, maximum=30.0, attempts=5)
    async for attempt in backoff.async_retrying(ChannelError, on_retry=log):
        with attempt:
            await transport.send(message)

Only the exceptions named are retried; any other error ends the loop at once. When the
attempts run out the last error is raised as it was (not tenacity's `RetryError`), so
callers catch what they caught before. The sleep and the random source are passed in:
tests record the waits instead of waiting.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import tenacity
from tenacity import RetryCallState

__all__ = ["Backoff", "FullJitter", "RetryNotice", "restart"]

ErrorTypes = type[BaseException] | tuple[type[BaseException], ...]


@dataclass(frozen=True)
class RetryNotice:
    """What `on_retry` hears before each wait."""

    attempt: int
    """The attempt that failed, from 1."""
    error: BaseException
    delay: float
    """Seconds until the next attempt."""


class FullJitter(tenacity.wait.wait_base):
    """Waits a random time in [0, min(maximum, initial * 2 ** (n - 1))] after attempt n.

    This is tenacity's `wait_random_exponential` ("full jitter") with a random source of
    its own. Chosen over `wait_exponential_jitter`, which adds a little randomness to the
    exponential delay and then caps it: once a long outage reaches the cap, every client
    waits exactly the cap again, and a thousand devices that lost the same broker come back
    in lockstep. Full jitter spreads them over the whole window at every step.

    Args:
        initial: seconds, the longest wait after the first failure.
        maximum: seconds, the cap on the longest wait.
        rng: the random source (default: the `random` module's own generator).
    """

    def __init__(self, initial: float, maximum: float, rng: random.Random | None = None) -> None:
        self.initial = initial
        self.maximum = maximum
        # By default the `random` module's own generator: Python reseeds it in a forked
        # child, so agents forked from one parent do not share a sequence.
        self._uniform = rng.uniform if rng is not None else random.uniform

    def ceiling(self, attempt: int) -> float:
        """The longest wait after failed attempt `attempt` (from 1)."""
        if self.initial <= 0 or self.maximum <= 0:
            return 0.0
        # Compared as logarithms: a loop that retries for days would overflow 2 ** n.
        if attempt - 1 >= math.log2(self.maximum / self.initial):
            return self.maximum
        return float(self.initial * 2 ** (attempt - 1))

    def delay(self, attempt: int) -> float:
        """A wait drawn for failed attempt `attempt`."""
        return self._uniform(0.0, self.ceiling(attempt))

    def __call__(self, retry_state: RetryCallState) -> float:
        """The wait before the next attempt, as tenacity asks for it."""
        return self.delay(retry_state.attempt_number)


@dataclass(frozen=True)
class Backoff:
    """How long to wait between attempts, and when to give up."""

    initial: float
    """Seconds: the longest wait after the first failure; it doubles for each further one."""
    maximum: float
    """Seconds: no wait is longer."""
    attempts: int | None = None
    """Tries in all, the first included; None: no limit."""
    deadline: float | None = None
    """Seconds from the first try after which no further try starts; None: no limit."""

    def __post_init__(self) -> None:
        if self.initial < 0 or self.maximum < 0:
            raise ValueError("backoff delays must not be negative")
        if self.attempts is not None and self.attempts < 1:
            raise ValueError("a backoff needs at least 1 attempt")
        if self.deadline is not None and self.deadline <= 0:
            raise ValueError("a backoff deadline must be positive")

    @classmethod
    def uncapped(cls, initial: float, attempts: int) -> Backoff:
        """Waits that double until the attempts run out, with no cap of their own."""
        return cls(initial, initial * 2 ** max(attempts - 2, 0), attempts=attempts)

    def wait(self, rng: random.Random | None = None) -> FullJitter:
        """The wait strategy, drawing from `rng` (by default the `random` module)."""
        return FullJitter(self.initial, self.maximum, rng)

    def retrying(
        self,
        retry_on: ErrorTypes,
        *,
        when: Callable[[BaseException], bool] | None = None,
        on_retry: Callable[[RetryNotice], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> tenacity.Retrying:
        """A tenacity controller for blocking code: iterate over it, or call it with a function.

        Args:
            retry_on: The errors worth another attempt; others are raised at once.
            when: Narrows `retry_on`: only errors it accepts are retried.
            on_retry: Called before each wait (for the log line).
            sleep: How to wait.
            rng: The random source of the jitter.
        """
        return tenacity.Retrying(
            sleep=sleep,
            stop=self._stop(),
            wait=self.wait(rng),
            retry=_retry_if(retry_on, when),
            before_sleep=_before_sleep(on_retry),
            reraise=True,
        )

    def async_retrying(
        self,
        retry_on: ErrorTypes,
        *,
        when: Callable[[BaseException], bool] | None = None,
        on_retry: Callable[[RetryNotice], None] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> tenacity.AsyncRetrying:
        """The same for coroutines: `async for attempt in ...: with attempt: ...`.

        One controller serves one loop: build a new one for each (they keep state).
        """
        return tenacity.AsyncRetrying(
            sleep=sleep,
            stop=self._stop(),
            wait=self.wait(rng),
            retry=_retry_if(retry_on, when),
            before_sleep=_before_sleep(on_retry),
            reraise=True,
        )

    def _stop(self) -> tenacity.stop.stop_base:
        stop: tenacity.stop.stop_base = tenacity.stop_never
        if self.attempts is not None:
            stop = stop | tenacity.stop_after_attempt(self.attempts)
        if self.deadline is not None:
            stop = stop | tenacity.stop_before_delay(self.deadline)
        return stop


def restart(state: RetryCallState) -> None:
    """Count the next failure as a first one, as if the retrying began now.

    For work that made progress before it failed (a stream that delivered messages): only
    failures in a row should wait longer and longer.
    """
    state.attempt_number = 1
    state.start_time = time.monotonic()


def _retry_if(
    retry_on: ErrorTypes, when: Callable[[BaseException], bool] | None
) -> tenacity.retry_base:
    def retryable(error: BaseException) -> bool:
        return isinstance(error, retry_on) and (when is None or when(error))

    return tenacity.retry_if_exception(retryable)


def _before_sleep(
    on_retry: Callable[[RetryNotice], None] | None,
) -> Callable[[RetryCallState], None] | None:
    if on_retry is None:
        return None

    def notify(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        assert error is not None  # only errors are retried
        on_retry(RetryNotice(state.attempt_number, error, state.upcoming_sleep))

    return notify
