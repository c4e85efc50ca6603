"""Per-deployment request counters and latency histograms.

Counters and a coarse histogram feed `GET /metrics` (Prometheus text format). The counters
of routed requests and their fine latency histogram (`reading`) are what a canary rollout
reads at each step's start and end: the difference is exact however many requests came.

The routed counters leave out requests a client pinned to a deployment
(`azureml-model-deployment` header): what a client pins must not steer the judge. Pinned
requests are still counted on `/metrics`, and so are requests refused before a deployment
was chosen (no key, wrong route or method, unknown deployment, no traffic). `/metrics` also
has the standard `process_*` metrics, named and described as the Prometheus client's
process collector has them, and a `modelferry_model_info` series per deployment.
"""

from __future__ import annotations

import bisect
import secrets
import sys
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

import psutil

from modelferry.endpoints.counters import (
    LATENCY_BOUNDS_S,
    CounterReading,
    DeploymentCounters,
)

#: The content type of the Prometheus text exposition format that `prometheus` writes.
PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

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

_BOUNDS_MS = tuple(bound * 1000 for bound in LATENCY_BOUNDS_S)


@dataclass
class DeploymentTelemetry:
    """What one deployment has served."""

    errors: int = 0
    client_errors: int = 0
    pinned: int = 0
    rows: int = 0
    mirrored: int = 0
    latency_sum: float = 0.0
    buckets: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    # Routed (not pinned) requests: what a rollout judges.
    routed: int = 0
    routed_errors: int = 0
    routed_client_errors: int = 0
    routed_latency: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BOUNDS_S) + 1))


class Telemetry:
    """Thread-safe recorder for every deployment of one endpoint."""

    def __init__(self) -> None:
        """Start with nothing recorded."""
        self._lock = threading.Lock()
        self._deployments: dict[str, DeploymentTelemetry] = {}
        self._status_counts: dict[tuple[str, int], int] = {}
        self._unrouted: dict[int, int] = {}
        self._process = psutil.Process()
        #: Who counts: a restarted server has another identity and counts from zero.
        self.server = secrets.token_hex(8)
        self.started = datetime.now(UTC)

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
            pinned: the client chose the deployment; kept out of the routed counters.
            client_error: a 400 that every other deployment would give too (the request
                is bad whatever the model), so not the deployment's error.
        """
        # A 400 counts when another deployment would have accepted the request: a new
        # model whose schema breaks its clients' requests is a regression a rollout must
        # see. A 400 every deployment would give is the client's and says nothing.
        client = status == 400 and client_error
        failed = status >= 500 or (status == 400 and not client)
        with self._lock:
            stats = self._deployments.get(deployment)
            if stats is None:
                stats = self._deployments[deployment] = DeploymentTelemetry()
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
                stats.routed += 1
                if failed:
                    stats.routed_errors += 1
                if client:
                    stats.routed_client_errors += 1
                stats.routed_latency[bisect.bisect_left(LATENCY_BOUNDS_S, seconds)] += 1
            key = (deployment, status)
            self._status_counts[key] = self._status_counts.get(key, 0) + 1

    def record_unrouted(self, status: int) -> None:
        """Count one request refused with `status` before any deployment was chosen."""
        with self._lock:
            self._unrouted[status] = self._unrouted.get(status, 0) + 1

    def record_mirror(self, deployment: str) -> None:
        """Count one request copied to a mirror deployment."""
        with self._lock:
            stats = self._deployments.setdefault(deployment, DeploymentTelemetry())
            stats.mirrored += 1

    def reading(self, deployments: Iterable[str]) -> CounterReading:
        """The routed counters of `deployments` now (zeros for one not served yet).

        Pinned requests are left out, and client errors (see `record`) are not errors:
        this is what a rollout judges, and a client must not be able to steer it.
        """
        counters: dict[str, DeploymentCounters] = {}
        with self._lock:
            for name in deployments:
                stats = self._deployments.get(name)
                counters[name] = (
                    DeploymentCounters(
                        stats.routed,
                        stats.routed_errors,
                        stats.routed_client_errors,
                        tuple(stats.routed_latency),
                    )
                    if stats is not None
                    else DeploymentCounters(latency=(0,) * (len(LATENCY_BOUNDS_S) + 1))
                )
        return CounterReading(self.server, self.started, _BOUNDS_MS, counters)

    def prometheus(self, endpoint: str, models: Mapping[str, tuple[str, str]] | None = None) -> str:
        """All counters in Prometheus text exposition format (`PROMETHEUS_CONTENT_TYPE`).

        Args:
            endpoint: the endpoint's name, a label of every series.
            models: each deployment's model name and version, for `modelferry_model_info`.
        """
        lines = _process_metrics(self._process)
        lines += [
            "# HELP modelferry_model_info The model version each deployment serves.",
            "# TYPE modelferry_model_info gauge",
        ]
        for deployment, (name, version) in sorted((models or {}).items()):
            labels = (
                f'endpoint="{endpoint}",deployment="{deployment}",'
                f'model_name="{_escaped(name)}",model_version="{_escaped(version)}"'
            )
            lines.append(f"modelferry_model_info{{{labels}}} 1")
        lines += [
            "# HELP modelferry_requests_total Scoring requests answered, by deployment and code.",
            "# TYPE modelferry_requests_total counter",
        ]
        with self._lock:
            for (deployment, status), count in sorted(self._status_counts.items()):
                labels = f'endpoint="{endpoint}",deployment="{deployment}",code="{status}"'
                lines.append(f"modelferry_requests_total{{{labels}}} {count}")
            unrouted = sorted(self._unrouted.items())
            snapshot = {name: _copy(stats) for name, stats in self._deployments.items()}
        lines += [
            "# HELP modelferry_unrouted_requests_total Requests refused before a deployment "
            "was chosen (no key, wrong route or method, unknown deployment, no traffic).",
            "# TYPE modelferry_unrouted_requests_total counter",
        ]
        for status, count in unrouted:
            labels = f'endpoint="{endpoint}",code="{status}"'
            lines.append(f"modelferry_unrouted_requests_total{{{labels}}} {count}")
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
        errors=stats.errors,
        client_errors=stats.client_errors,
        pinned=stats.pinned,
        rows=stats.rows,
        mirrored=stats.mirrored,
        latency_sum=stats.latency_sum,
        buckets=list(stats.buckets),
    )


def _escaped(value: str) -> str:
    """`value` as a Prometheus label value: backslash, quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _process_metrics(process: psutil.Process) -> list[str]:
    """The `process_*` metrics of the Prometheus client's process collector.

    Named, described and typed as that collector has them; one the platform does not
    have (file descriptors on Windows, their limit off Linux or when unlimited) is left out.
    """
    with process.oneshot():
        memory = process.memory_info()
        cpu = process.cpu_times()
        metrics: list[tuple[str, str, str, float]] = [
            ("virtual_memory_bytes", "gauge", "Virtual memory size in bytes.", memory.vms),
            ("resident_memory_bytes", "gauge", "Resident memory size in bytes.", memory.rss),
            (
                "start_time_seconds",
                "gauge",
                "Start time of the process since unix epoch in seconds.",
                process.create_time(),
            ),
            (
                "cpu_seconds_total",
                "counter",
                "Total user and system CPU time spent in seconds.",
                cpu.user + cpu.system,
            ),
        ]
        if sys.platform != "win32":
            open_fds = process.num_fds()
            metrics.append(("open_fds", "gauge", "Number of open file descriptors.", open_fds))
        if sys.platform.startswith("linux"):
            max_fds = process.rlimit(psutil.RLIMIT_NOFILE)[0]
            if max_fds != psutil.RLIM_INFINITY:  # no number to give for "unlimited"
                metrics.append(
                    ("max_fds", "gauge", "Maximum number of open file descriptors.", max_fds)
                )
    lines = []
    for name, kind, help_text, value in metrics:
        lines += [
            f"# HELP process_{name} {help_text}",
            f"# TYPE process_{name} {kind}",
            f"process_{name} {float(value)!r}",
        ]
    return lines
