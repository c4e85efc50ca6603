"""The traffic driver: routed requests with the key, paced, counted, stopped cleanly."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest
from pydantic import SecretStr

from modelferry.endpoints.traffic import (
    TrafficDriver,
    TrafficReport,
    requests_per_second,
    single_row_requests,
)

KEY = SecretStr("k-traffic")
EXAMPLE = {
    "input_data": {"columns": ["a", "b"], "index": [0, 1, 2], "data": [[1, 2], [3, 4], [5, 6]]}
}


class RecordingEndpoint:
    """An httpx transport that records each request and answers with `status`."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.requests: list[httpx.Request] = []
        self.lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        with self.lock:
            self.requests.append(request)
        return httpx.Response(self.status, json={"predictions": [[0.1, 0.9]]})


def test_rate_gives_the_judge_its_minimum_with_margin_at_every_share() -> None:
    assert requests_per_second(20, 10, 2.0) == 200.0  # 400 sent, 40 expected at 10 %
    assert requests_per_second(20, 50, 2.0) == 40.0
    assert requests_per_second(20, 100, 4.0) == 10.0
    with pytest.raises(ValueError, match="percentage"):
        requests_per_second(20, 0, 2.0)


def test_the_example_is_replayed_one_row_per_request() -> None:
    rows = single_row_requests(EXAMPLE)
    assert [r["input_data"]["data"] for r in rows] == [[[1, 2]], [[3, 4]], [[5, 6]]]
    assert all(r["input_data"]["columns"] == ["a", "b"] for r in rows)
    with pytest.raises(ValueError, match="no rows"):
        single_row_requests({"input_data": {"columns": ["a"], "index": [], "data": []}})


def test_requests_go_to_the_router_with_the_key_in_turn_and_stop_cleanly() -> None:
    endpoint = RecordingEndpoint()
    payloads = single_row_requests(EXAMPLE)
    driver = TrafficDriver(
        "http://ep/score", KEY, payloads, rate=50.0, transport=httpx.MockTransport(endpoint)
    )
    with driver:
        time.sleep(0.5)
    report = driver.stop()  # a second stop is harmless
    sent = len(endpoint.requests)
    time.sleep(0.2)
    assert len(endpoint.requests) == sent  # nothing is sent once stopped
    assert report == TrafficReport(sent=sent, answered=sent)
    assert 15 <= sent <= 30  # paced at 50 per second
    first = endpoint.requests[0]
    assert first.url == "http://ep/score"
    assert first.headers["authorization"] == "Bearer k-traffic"
    assert "azureml-model-deployment" not in first.headers  # routed, never pinned
    bodies = [json.loads(r.content) for r in endpoint.requests[:4]]
    assert bodies == [*payloads, payloads[0]]


def test_refusals_and_dead_endpoints_are_counted_never_raised() -> None:
    refusing = TrafficDriver(
        "http://ep/score",
        KEY,
        [EXAMPLE],
        100.0,
        transport=httpx.MockTransport(RecordingEndpoint(503)),
    )
    with refusing:
        time.sleep(0.2)
    report = refusing.stop()
    assert report.sent > 0
    assert report.refused == report.sent
    assert report.answered == 0

    def unreachable(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    dead = TrafficDriver(
        "http://ep/score", KEY, [EXAMPLE], 100.0, transport=httpx.MockTransport(unreachable)
    )
    with dead:
        time.sleep(0.2)
    report = dead.stop()
    assert report.sent > 0
    assert report.failed == report.sent
    assert "without an answer" in report.summary()


def test_an_endpoint_that_hangs_does_not_hold_the_step_past_its_end() -> None:
    release = threading.Event()

    def hanging(request: httpx.Request) -> httpx.Response:
        release.wait(30)
        return httpx.Response(200, json={"predictions": [[0.1, 0.9]]})

    driver = TrafficDriver(
        "http://ep/score", KEY, [EXAMPLE], 100.0, timeout_s=2.0,
        transport=httpx.MockTransport(hanging), stop_grace_s=0.3,
    )  # fmt: skip
    driver.start()
    time.sleep(0.1)
    started = time.monotonic()
    report = driver.stop()
    assert time.monotonic() - started < 1.0  # the grace, not the request's timeout
    assert report == TrafficReport(sent=1, failed=1)
    release.set()  # the late answer is not counted a second time
    time.sleep(0.2)
    assert driver.stop() == driver.report() == report
