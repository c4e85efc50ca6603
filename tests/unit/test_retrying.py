"""The retry policy: growth and cap, jitter, what is retried, what the caller gets at the end.

Waits are recorded by an injected sleep, never slept. `HighEnd` draws the top of each
window, so the windows themselves can be checked exactly.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import pytest

from modelferry.retrying import Backoff, FullJitter, RetryNotice, restart


class HighEnd(random.Random):
    """A random source that always draws the top of the range: the window itself."""

    def uniform(self, a: float, b: float) -> float:
        return b


class Failing:
    """Raises `error` for the first `failures` calls, then returns "done"."""

    def __init__(self, failures: int, error: Exception | None = None) -> None:
        self.failures = failures
        self.error = error or ConnectionError("broker unreachable")
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return "done"


def waits_of(backoff: Backoff, failures: int, rng: random.Random | None = None) -> list[float]:
    """The waits `backoff` sleeps through while a call fails `failures` times."""
    slept: list[float] = []
    backoff.retrying(ConnectionError, sleep=slept.append, rng=rng)(Failing(failures))
    return [float(s) for s in slept]


def test_windows_double_from_the_initial_delay_up_to_the_cap() -> None:
    waits = waits_of(Backoff(0.5, 10.0), failures=8, rng=HighEnd())
    assert waits == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]


def test_each_wait_is_drawn_at_random_within_its_window() -> None:
    backoff = Backoff(0.5, 10.0)
    windows = [min(10.0, 0.5 * 2**n) for n in range(12)]
    for seed in range(20):
        waits = waits_of(backoff, failures=12, rng=random.Random(seed))
        assert len(waits) == 12
        assert all(0.0 <= wait <= window for wait, window in zip(waits, windows, strict=True))
        assert waits != windows  # jittered, not the plain exponential sequence


def test_two_clients_with_the_same_failures_do_not_wait_in_lockstep() -> None:
    first = waits_of(Backoff(0.5, 30.0), failures=10, rng=random.Random(1))
    second = waits_of(Backoff(0.5, 30.0), failures=10, rng=random.Random(2))
    assert len(first) == len(second) == 10
    assert all(a != b for a, b in zip(first, second, strict=True))


def test_a_fleet_at_the_cap_is_spread_over_the_whole_window() -> None:
    # With a jitter added below the cap, every client would wait exactly the cap here.
    wait = FullJitter(0.5, 30.0, random.Random(42))
    waits = [wait.delay(40) for _ in range(1000)]
    assert all(0.0 <= w <= 30.0 for w in waits)
    assert len(set(waits)) == 1000
    assert min(waits) < 3.0
    assert max(waits) > 27.0
    assert 12.0 < sum(waits) / len(waits) < 18.0


def test_the_default_draws_from_the_random_module() -> None:
    # The module's generator is reseeded in a forked child; a private one would not be.
    saved = random.getstate()
    try:
        random.seed(7)
        once = FullJitter(1.0, 60.0).delay(5)
        random.seed(7)
        again = FullJitter(1.0, 60.0).delay(5)
        random.seed(8)
        other = FullJitter(1.0, 60.0).delay(5)
    finally:
        random.setstate(saved)
    assert once == again
    assert once != other


def test_a_loop_that_retries_for_days_stays_at_the_cap() -> None:
    wait = FullJitter(0.5, 30.0, HighEnd())
    assert wait.ceiling(1) == 0.5
    assert wait.ceiling(7) == 30.0
    assert wait.ceiling(100_000) == 30.0


def test_a_zero_initial_delay_never_waits() -> None:
    assert waits_of(Backoff(0.0, 15.0), failures=4, rng=HighEnd()) == [0.0] * 4


def test_an_initial_delay_above_the_cap_waits_the_cap() -> None:
    assert waits_of(Backoff(20.0, 15.0), failures=2, rng=HighEnd()) == [15.0, 15.0]


def test_uncapped_waits_double_until_the_attempts_run_out() -> None:
    backoff = Backoff.uncapped(2.0, attempts=4)
    assert backoff.maximum == 8.0
    slept: list[float] = []
    with pytest.raises(ConnectionError):
        backoff.retrying(ConnectionError, sleep=slept.append, rng=HighEnd())(Failing(10))
    assert slept == [2.0, 4.0, 8.0]


def test_attempts_run_out_with_the_last_error_itself() -> None:
    failing = Failing(10, ConnectionError("broker unreachable"))
    slept: list[float] = []
    with pytest.raises(ConnectionError, match=r"^broker unreachable$") as raised:
        Backoff(0.1, 1.0, attempts=3).retrying(ConnectionError, sleep=slept.append)(failing)
    assert raised.value is failing.error
    assert failing.calls == 3
    assert len(slept) == 2


def test_errors_not_named_are_raised_at_once() -> None:
    failing = Failing(10, ValueError("bad request"))
    slept: list[float] = []
    with pytest.raises(ValueError, match="bad request"):
        Backoff(0.1, 1.0, attempts=5).retrying(ConnectionError, sleep=slept.append)(failing)
    assert failing.calls == 1
    assert slept == []


def test_when_narrows_the_errors_retried() -> None:
    final = Failing(10, ConnectionError("final"))
    worth_it = Failing(2, ConnectionError("transient"))

    def transient(error: BaseException) -> bool:
        return str(error) == "transient"

    retrying = Backoff(0.1, 1.0, attempts=5).retrying(
        ConnectionError, when=transient, sleep=lambda s: None
    )
    with pytest.raises(ConnectionError, match="final"):
        retrying(final)
    assert final.calls == 1
    assert retrying(worth_it) == "done"
    assert worth_it.calls == 3


def test_on_retry_hears_each_failure_with_its_wait_but_not_the_last() -> None:
    notices: list[RetryNotice] = []
    slept: list[float] = []
    failing = Failing(10)
    with pytest.raises(ConnectionError):
        Backoff(1.0, 4.0, attempts=4).retrying(
            ConnectionError, on_retry=notices.append, sleep=slept.append, rng=HighEnd()
        )(failing)
    assert [(n.attempt, n.delay) for n in notices] == [(1, 1.0), (2, 2.0), (3, 4.0)]
    assert all(n.error is failing.error for n in notices)
    assert slept == [n.delay for n in notices]


def test_the_deadline_ends_a_loop_without_an_attempt_limit() -> None:
    calls = 0

    def slow_failure() -> None:
        nonlocal calls
        calls += 1
        if calls > 1000:
            raise AssertionError("the deadline was not honoured")
        time.sleep(0.02)
        raise ConnectionError("still down")

    started = time.monotonic()
    with pytest.raises(ConnectionError, match="still down"):
        Backoff(0.0, 0.0, deadline=0.1).retrying(ConnectionError, sleep=lambda s: None)(
            slow_failure
        )
    assert calls <= 10  # each try takes 0.02 s: the deadline came after a few
    assert time.monotonic() - started < 5.0


def test_async_retrying_iterates_attempts_and_records_its_waits() -> None:
    slept: list[float] = []
    failing = Failing(3)

    async def record(seconds: float) -> None:
        slept.append(seconds)

    async def scenario() -> str:
        async for attempt in Backoff(0.25, 1.0, attempts=5).async_retrying(
            ConnectionError, sleep=record, rng=HighEnd()
        ):
            with attempt:
                return failing()
        raise AssertionError("unreachable")

    assert asyncio.run(scenario()) == "done"
    assert failing.calls == 4
    assert slept == [0.25, 0.5, 1.0]


def test_async_attempts_run_out_with_the_last_error() -> None:
    async def never(seconds: float) -> None:
        pass

    async def scenario() -> None:
        async for attempt in Backoff(0.1, 1.0, attempts=2).async_retrying(
            ConnectionError, sleep=never
        ):
            with attempt:
                raise ConnectionError("refused")

    with pytest.raises(ConnectionError, match=r"^refused$"):
        asyncio.run(scenario())


def test_restart_counts_the_next_failure_as_a_first_one() -> None:
    slept: list[float] = []
    calls = 0

    async def record(seconds: float) -> None:
        slept.append(seconds)

    async def scenario() -> None:
        nonlocal calls
        async for attempt in Backoff(1.0, 60.0).async_retrying(
            ConnectionError, sleep=record, rng=HighEnd()
        ):
            with attempt:
                calls += 1
                if calls == 4:
                    restart(attempt.retry_state)  # this one made progress before failing
                if calls < 6:
                    raise ConnectionError("stream broke")

    asyncio.run(scenario())
    assert slept == [1.0, 2.0, 4.0, 1.0, 2.0]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"initial": -1.0, "maximum": 1.0}, "negative"),
        ({"initial": 1.0, "maximum": -1.0}, "negative"),
        ({"initial": 1.0, "maximum": 1.0, "attempts": 0}, "at least 1"),
        ({"initial": 1.0, "maximum": 1.0, "deadline": 0.0}, "positive"),
    ],
)
def test_nonsense_settings_are_refused(arguments: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Backoff(**arguments)
