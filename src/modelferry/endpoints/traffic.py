"""Replayed traffic: real scoring requests through an endpoint's router while a step is held.

A canary step is judged on the requests the endpoint's router sent the new deployment.
Where no clients call the endpoint (a demo, a fresh test environment), nothing would be
judged; `TrafficDriver` sends the model's own rows (e.g. its logged input example, taken
from the test split it was evaluated on) to the scoring URI, as a client would: with the
endpoint key and never pinned to a deployment, so the router decides and the endpoint's
own metrics count them.

It never fails a rollout by itself: whatever the endpoint answers (refusals, errors,
timeouts) is what the judge reads from the endpoint's metrics; the driver only counts.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import SecretStr

#: Requests sent per request the judge needs, so that a random router's share of them
#: reaches the minimum with a wide margin (at 10 % and 20 needed: 400 sent, 40 expected).
DEFAULT_MARGIN = 2.0


@dataclass(frozen=True)
class TrafficReport:
    """What the driver sent and how the endpoint answered.

    Attributes:
        sent: requests sent.
        answered: requests answered 200.
        refused: requests answered with another status (4xx or 5xx).
        failed: requests with no answer (connection error, timeout, or none yet when
            the driver stopped).
    """

    sent: int = 0
    answered: int = 0
    refused: int = 0
    failed: int = 0

    def summary(self) -> str:
        """One line, e.g. "420 requests sent: 420 answered, 0 refused, 0 without an answer"."""
        return (
            f"{self.sent} requests sent: {self.answered} answered, {self.refused} refused, "
            f"{self.failed} without an answer"
        )


def requests_per_second(
    min_requests: int, share_percent: int, seconds: float, margin: float = DEFAULT_MARGIN
) -> float:
    """The request rate that gives a deployment enough requests to judge a step.

    At this rate, a deployment on `share_percent` % of routed traffic answers at least
    `min_requests` requests in `seconds`, with `margin` times as many as needed.

    Raises:
        ValueError: a share outside 1-100 or a step time that is not positive.
    """
    if not 0 < share_percent <= 100:
        raise ValueError(f"traffic share {share_percent} must be a percentage from 1 to 100")
    if seconds <= 0:
        raise ValueError(f"step time {seconds} s must be positive")
    needed = math.ceil(max(min_requests, 1) * margin * 100 / share_percent)
    return needed / seconds


def single_row_requests(example: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Split an Azure ML style request into one request per row.

    The request is `input_data` with columns and data; replaying its rows gives many small
    requests, as clients send.

    Raises:
        ValueError: the request has no rows.
    """
    table = example["input_data"]
    rows = list(table["data"])
    if not rows:
        raise ValueError("the example request has no rows to replay")
    columns = list(table["columns"])
    return [{"input_data": {"columns": columns, "index": [0], "data": [row]}} for row in rows]


class TrafficDriver:
    """Sends `payloads` in turn to `scoring_uri` at `rate` requests per second until stopped.

    Requests go out from a background thread, one at a time and paced; a slow endpoint
    slows the driver rather than piling requests up. `stop()` ends it after the request in
    flight, waiting at most `stop_grace_s` for it, so that a step ends on time even when
    the endpoint hangs; it is idempotent. Nothing the endpoint does makes the driver raise.

    Args:
        scoring_uri: the endpoint's scoring URI (its router).
        key: the endpoint key, sent as `Authorization: Bearer <key>`.
        payloads: the request bodies to replay, in turn.
        rate: requests per second.
        timeout_s: how long one request may take.
        transport: an httpx transport (tests pass `httpx.MockTransport` or an ASGI app).
        stop_grace_s: how long `stop()` waits for the request in flight; one still
            unanswered then counts as without an answer, and its thread (a daemon) ends
            when the request does.
    """

    def __init__(
        self,
        scoring_uri: str,
        key: SecretStr,
        payloads: Sequence[Mapping[str, Any]],
        rate: float,
        timeout_s: float = 10.0,
        transport: httpx.BaseTransport | None = None,
        stop_grace_s: float = 1.0,
    ) -> None:
        if not payloads:
            raise ValueError("give at least one request body to replay")
        if rate <= 0:
            raise ValueError(f"rate {rate} must be positive (requests per second)")
        self.scoring_uri = scoring_uri
        self._key = key
        self._payloads = [dict(p) for p in payloads]
        self._interval = 1.0 / rate
        self._timeout_s = timeout_s
        self._transport = transport
        self._stop_grace_s = stop_grace_s
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._counts = {"sent": 0, "answered": 0, "refused": 0, "failed": 0}
        # A request is sent and not yet counted; once stopped, nothing more is counted.
        self._in_flight = False
        self._stopped = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start sending; a second call does nothing."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="traffic-driver", daemon=True)
            self._thread.start()

    def stop(self) -> TrafficReport:
        """Stop after the request in flight and say what was sent (idempotent).

        Waits at most `stop_grace_s` for the request in flight.
        """
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self._stop_grace_s)
        with self._lock:
            if self._in_flight:  # the endpoint has not answered it: the step ends anyway
                self._tally("failed")
            self._stopped = True
        return self.report()

    def report(self) -> TrafficReport:
        """The counts so far."""
        with self._lock:
            return TrafficReport(**self._counts)

    def __enter__(self) -> TrafficDriver:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        headers = {"Authorization": f"Bearer {self._key.get_secret_value()}"}
        with httpx.Client(transport=self._transport, timeout=self._timeout_s) as client:
            due = time.monotonic()
            sent = 0
            while not self._stop.is_set():
                with self._lock:
                    self._in_flight = True
                self._count(self._send(client, self._payloads[sent % len(self._payloads)], headers))
                sent += 1
                due += self._interval
                # Behind schedule (a slow answer): go on at once, without a burst to catch up.
                due = max(due, time.monotonic() - self._interval)
                self._stop.wait(max(0.0, due - time.monotonic()))

    def _send(self, client: httpx.Client, payload: dict[str, Any], headers: dict[str, str]) -> str:
        try:
            response = client.post(self.scoring_uri, json=payload, headers=headers)
        except (httpx.HTTPError, httpx.InvalidURL, OSError):
            return "failed"
        return "answered" if response.status_code == 200 else "refused"

    def _count(self, outcome: str) -> None:
        with self._lock:
            if not self._stopped:  # else `stop()` counted it already, as without an answer
                self._tally(outcome)

    def _tally(self, outcome: str) -> None:
        """Count the request in flight as `outcome`; the caller holds the lock."""
        self._in_flight = False
        self._counts["sent"] += 1
        self._counts[outcome] += 1
