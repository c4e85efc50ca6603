"""Per-deployment request counters, a latency histogram and a recent-requests window.

Counters and the histogram feed `GET /metrics` (Prometheus text format); the window
answers "error rate and p99 since T", which a canary rollout watches at each step.

The window holds only requests the router assigned: a client can pin a request to a
deployment (`azureml-model-deployment` header), and what it pins must not steer the judge.
Pinned requests are still counted on `/metrics`.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

#: Histogram bucket upper bounds, in seconds.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

# Per-deployment counters exposed on /metrics: (metric, help, DeploymentTelemetry field).
_COUNTERS = (
    (
        "modelferry_request_errors_total",
        "Failed (5xx) requests, and refused (400) ones another deployment would accept.",
        "errors",
    ),
    (
        "modelferry_request_client_errors_total",
        "Refused (400) requests no other deployment would accept either: the client's.",
        "client_errors",
    ),
    ("modelferry_pinned_requests_total", "Requests a client pinned to the deployment.", "pinned"),
    ("modelferry_rows_scored_total", "Rows scored.", "rows"),
    ("modelferry_mirrored_requests_total", "Requests copied to a mirror deployment.", "mirrored"),
)

# How many recent requests each deployment remembers for windowed questions.
_WINDOW = 50_000


@dataclass
class DeploymentTelemetry:
    """What one deployment has served."""

    requests: int = 0
    errors: int = 0
    client_errors: int = 0
    pinned: int = 0
    rows: int = 0
    mirrored: int = 0
    latency_sum: float = 0.0
    buckets: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    # (monotonic time, latency seconds, failed) of recent routed (not pinned) requests.
    recent: deque[tuple[float, float, bool]] = field(default_factory=lambda: deque(maxlen=_WINDOW))


@dataclass(frozen=True)
class WindowSummary:
    """Requests, errors and p99 latency over a window."""

    requests: int
    errors: int
    p99_ms: float | None


class Telemetry:
    """Thread-safe recorder for every deployment of one endpoint."""

    def __init__(self) -> None:
        """Start with nothing recorded."""
        self._lock = threading.Lock()
        self._deployments: dict[str, DeploymentTelemetry] = {}
        self._status_counts: dict[tuple[str, int], int] = {}
        self.started = time.time()
        self._monotonic_offset = time.time() - time.monotonic()

    def record(
        self,
        deployment: str,
        status: int,
        seconds: float,
        rows: int,
        *,
        pinned: bool = False,
        client_error: bool = False,
    ) -> None:
        """Count one answered request.

        Args:
            deployment: the deployment that answered.
            status: the HTTP status it answered with.
            seconds: how long the answer took.
            rows: rows scored.
            pinned: the client chose the deployment; kept out of the judged window.
            client_error: a 400 that every other deployment would give too (the request
                is bad whatever the model), so not the deployment's error.
        """
        # A 400 counts when another deployment would have accepted the request: a new
        # model whose schema breaks its clients' requests is a regression a rollout must
        # see. A 400 every deployment would give is the client's and says nothing.
        client = status == 400 and client_error
        failed = status >= 500 or (status == 400 and not client)
        now = time.monotonic()
        with self._lock:
            stats = self._deployments.get(deployment)
            if stats is None:
                stats = self._deployments[deployment] = DeploymentTelemetry()
            stats.requests += 1
            stats.rows += rows
            stats.latency_sum += seconds
            stats.buckets[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
            if failed:
                stats.errors += 1
            if client:
                stats.client_errors += 1
            if pinned:
                stats.pinned += 1
            else:
                stats.recent.append((now, seconds, failed))
            key = (deployment, status)
            self._status_counts[key] = self._status_counts.get(key, 0) + 1

    def record_mirror(self, deployment: str) -> None:
        """Count one request copied to a mirror deployment."""
        with self._lock:
            stats = self._deployments.setdefault(deployment, DeploymentTelemetry())
            stats.mirrored += 1

    def summary_since(self, deployment: str, since_epoch: float) -> WindowSummary:
        """Routed requests, their errors and p99 latency since a wall-clock time.

        Pinned requests and client errors (see `record`) are left out: this is what a
        rollout judges, and a client must not be able to steer it.
        """
        since = since_epoch - self._monotonic_offset
        with self._lock:
            stats = self._deployments.get(deployment)
            window = [r for r in stats.recent if r[0] >= since] if stats else []
        if not window:
            return WindowSummary(0, 0, None)
        latencies = np.fromiter((r[1] for r in window), dtype=np.float64, count=len(window))
        errors = sum(1 for r in window if r[2])
        return WindowSummary(len(window), errors, float(np.percentile(latencies, 99) * 1000))

    def prometheus(self, endpoint: str) -> str:
        """All counters in Prometheus text exposition format."""
        lines = [
            "# HELP modelferry_requests_total Scoring requests answered, by deployment and code.",
            "# TYPE modelferry_requests_total counter",
        ]
        with self._lock:
            for (deployment, status), count in sorted(self._status_counts.items()):
                labels = f'endpoint="{endpoint}",deployment="{deployment}",code="{status}"'
                lines.append(f"modelferry_requests_total{{{labels}}} {count}")
            snapshot = {name: _copy(stats) for name, stats in self._deployments.items()}
        for metric, help_text, attribute in _COUNTERS:
            lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} counter"]
            for name, stats in sorted(snapshot.items()):
                labels = f'endpoint="{endpoint}",deployment="{name}"'
                lines.append(f"{metric}{{{labels}}} {getattr(stats, attribute)}")
        lines += [
            "# HELP modelferry_request_duration_seconds Scoring latency.",
            "# TYPE modelferry_request_duration_seconds histogram",
        ]
        for name, stats in sorted(snapshot.items()):
            labels = f'endpoint="{endpoint}",deployment="{name}"'
            cumulative = 0
            for bound, count in zip(LATENCY_BUCKETS, stats.buckets, strict=False):
                cumulative += count
                lines.append(
                    f'modelferry_request_duration_seconds_bucket{{{labels},le="{bound}"}} '
                    f"{cumulative}"
                )
            total = cumulative + stats.buckets[-1]
            lines.append(
                f'modelferry_request_duration_seconds_bucket{{{labels},le="+Inf"}} {total}'
            )
            lines.append(f"modelferry_request_duration_seconds_sum{{{labels}}} {stats.latency_sum}")
            lines.append(f"modelferry_request_duration_seconds_count{{{labels}}} {total}")
        return "\n".join(lines) + "\n"


def _copy(stats: DeploymentTelemetry) -> DeploymentTelemetry:
    return DeploymentTelemetry(
        requests=stats.requests,
        errors=stats.errors,
        client_errors=stats.client_errors,
        pinned=stats.pinned,
        rows=stats.rows,
        mirrored=stats.mirrored,
        latency_sum=stats.latency_sum,
        buckets=list(stats.buckets),
    )
