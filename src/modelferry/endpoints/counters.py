"""Cumulative request counters of an endpoint server, read at two moments and diffed.

A canary step is judged from what the server counted between the step's start and its
end: the counters only grow while the server runs, so the difference is exact however
many requests came. Latency is counted in fixed log-spaced buckets (each bound 5 % above
the one before), so that a difference of two readings also gives the p99 of the whole
period, to within one bucket.

The counters cover the requests the router assigned; requests a client pinned to a
deployment are left out, so that a client cannot steer the judge. A server that restarted
counts from zero again; a reading carries the server's identity so that this is seen.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from modelferry.endpoints.spec import DeploymentMetrics

_SMALLEST_S = 0.0001
_GROWTH = 1.05
#: Upper bounds of the latency buckets in seconds: 0.1 ms to about 60 s, 5 % apart.
#: A request answered in `s` seconds counts in bucket `bisect_left(LATENCY_BOUNDS_S, s)`;
#: a last bucket holds what is slower than the highest bound.
LATENCY_BOUNDS_S: tuple[float, ...] = tuple(_SMALLEST_S * _GROWTH**i for i in range(274))


@dataclass(frozen=True)
class DeploymentCounters:
    """What the router sent one deployment since its server started.

    Attributes:
        requests: routed requests answered.
        errors: 5xx answers, and 400s another live deployment would have accepted.
        client_errors: 400s every live deployment refuses (the client's, not an error).
        latency: requests per latency bucket (see `CounterReading.latency_bounds_ms`).
    """

    requests: int = 0
    errors: int = 0
    client_errors: int = 0
    latency: tuple[int, ...] = ()


@dataclass(frozen=True)
class CounterReading:
    """An endpoint server's counters at one moment.

    Attributes:
        server: changes whenever the server restarts (its counters start from zero).
        started: when that server started.
        latency_bounds_ms: upper bounds of the latency buckets, in milliseconds.
        deployments: the counters of each deployment the server serves.
    """

    server: str
    started: datetime
    latency_bounds_ms: tuple[float, ...]
    deployments: Mapping[str, DeploymentCounters]

    def to_json(self) -> dict[str, Any]:
        """The reading as JSON-ready values (what the server's admin route answers)."""
        return {
            "server": self.server,
            "started": self.started.timestamp(),
            "latency_bounds_ms": list(self.latency_bounds_ms),
            "deployments": {
                name: {
                    "requests": c.requests,
                    "errors": c.errors,
                    "client_errors": c.client_errors,
                    "latency": list(c.latency),
                }
                for name, c in self.deployments.items()
            },
        }

    @classmethod
    def from_json(cls, answer: Mapping[str, Any]) -> CounterReading:
        """A reading from what `to_json` gave.

        Raises:
            ValueError: the answer is not a counter reading.
        """
        try:
            return cls(
                server=str(answer["server"]),
                started=datetime.fromtimestamp(float(answer["started"]), UTC),
                latency_bounds_ms=tuple(float(b) for b in answer["latency_bounds_ms"]),
                deployments={
                    str(name): DeploymentCounters(
                        int(c["requests"]),
                        int(c["errors"]),
                        int(c["client_errors"]),
                        tuple(int(n) for n in c["latency"]),
                    )
                    for name, c in answer["deployments"].items()
                },
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"not a counter reading ({type(exc).__name__}: {exc})") from exc


@dataclass(frozen=True)
class MetricsMark:
    """Where a measurement starts: the time, and the endpoint's counters then if it has any.

    Attributes:
        at: when the mark was taken.
        counters: the server's counters at `at`; None for a backend that measures windows
            of time (Azure Monitor) instead.
    """

    at: datetime
    counters: CounterReading | None = None


@dataclass(frozen=True)
class StepMetrics:
    """What an endpoint measured per deployment over one period (a canary step).

    Attributes:
        deployments: requests, errors and p99 latency of each deployment.
        restarted: the server restarted during the period, at this time: the counts cover
            the period from then on only.
    """

    deployments: Mapping[str, DeploymentMetrics]
    restarted: datetime | None = None


def metrics_between(start: CounterReading, end: CounterReading) -> StepMetrics:
    """Each deployment's requests, errors and p99 between two readings of one server.

    When the server restarted in between (its identity changed), `end` alone counts what
    came after the restart, which lies within the period: that part is what is measured,
    and `StepMetrics.restarted` says so.
    """
    restarted = start.server != end.server
    base = {} if restarted else start.deployments
    measured: dict[str, DeploymentMetrics] = {}
    for name, now in end.deployments.items():
        before = base.get(name, DeploymentCounters())
        latency = _subtract(now.latency, before.latency)
        measured[name] = DeploymentMetrics(
            now.requests - before.requests,
            now.errors - before.errors,
            p99_ms(end.latency_bounds_ms, latency),
        )
    return StepMetrics(measured, end.started if restarted else None)


def p99_ms(bounds_ms: tuple[float, ...], counts: tuple[int, ...]) -> float | None:
    """The p99 latency of a histogram, as the upper bound of a bucket.

    The bound is that of the bucket holding the 99th percentile request: never below the
    true p99, at most one bucket above it. Requests slower than the highest bound are
    reported at that bound. None when the histogram counts no request.
    """
    total = sum(counts)
    if total == 0:
        return None
    rank = math.ceil(0.99 * total)
    seen = 0
    for index, count in enumerate(counts):
        seen += count
        if seen >= rank:
            return bounds_ms[min(index, len(bounds_ms) - 1)]
    return bounds_ms[-1]


def _subtract(now: tuple[int, ...], before: tuple[int, ...]) -> tuple[int, ...]:
    if not before:
        return now
    if len(before) != len(now):
        raise ValueError(
            f"the two readings count latency in different buckets ({len(before)} and "
            f"{len(now)}); read both from one server"
        )
    return tuple(a - b for a, b in zip(now, before, strict=True))
