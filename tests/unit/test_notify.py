"""The webhook notifier: what it posts, retries, and that the URL's token stays secret."""

from __future__ import annotations

import logging

import httpx
import pytest

from modelferry.errors import InvalidConfigError
from modelferry.notify import RUN_FAILED, Notification, WebhookNotifier, notifier_from_env
from tests.webhook_receiver import webhook_receiver

NOTICE = Notification(
    event=RUN_FAILED,
    title="nightly failed",
    text="MLflow was unreachable",
    flow_run_url="http://ui/runs/flow-run/1",
    details={"flow": "retrain-and-deliver"},
)


def test_posts_the_notification_as_json() -> None:
    with webhook_receiver() as receiver:
        assert WebhookNotifier(receiver.url).send(NOTICE)
    (body,) = receiver.received
    assert body["event"] == "run.failed"
    assert body["title"] == "nightly failed"
    assert body["text"] == "MLflow was unreachable\nhttp://ui/runs/flow-run/1"
    assert body["flow_run_url"] == "http://ui/runs/flow-run/1"
    assert body["details"] == {"flow": "retrain-and-deliver"}
    assert receiver.paths == ["/hooks/T0KEN-secret-part"]


def test_retries_server_errors_then_reports_false_without_the_token(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[httpx.Request] = []

    def failing(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(503)

    notifier = WebhookNotifier(
        "https://hooks.example.com/T0KEN-secret",
        attempts=3,
        backoff_seconds=0.0,
        transport=httpx.MockTransport(failing),
    )
    with caplog.at_level(logging.WARNING):
        assert notifier.send(NOTICE) is False
    assert len(calls) == 3
    assert "hooks.example.com" in caplog.text
    assert "HTTP 503" in caplog.text
    assert "T0KEN" not in caplog.text
    assert "T0KEN" not in repr(notifier)


def test_a_refusal_is_not_retried() -> None:
    calls: list[httpx.Request] = []

    def refusing(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(404)

    notifier = WebhookNotifier(
        "https://hooks.example.com/x", backoff_seconds=0.0, transport=httpx.MockTransport(refusing)
    )
    assert notifier.send(NOTICE) is False
    assert len(calls) == 1


def test_unreachable_receiver_does_not_raise() -> None:
    notifier = WebhookNotifier("http://127.0.0.1:9/x", attempts=1, timeout_seconds=1.0)
    assert notifier.send(NOTICE) is False


def test_bad_url_is_refused_without_echoing_it(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(InvalidConfigError, match="http\\(s\\) URL") as caught:
        WebhookNotifier("ftp://secret-token@host/x")
    assert "secret-token" not in str(caught.value)
    monkeypatch.delenv("MODELFERRY_WEBHOOK_URL", raising=False)
    assert notifier_from_env() is None
    monkeypatch.setenv("MODELFERRY_WEBHOOK_URL", "https://hooks.example.com/abc")
    notifier = notifier_from_env()
    assert notifier is not None
    assert notifier.target == "https://hooks.example.com"


def test_retries_wait_a_jittered_doubling_window_between_tries() -> None:
    answers = iter([503, 429, 502])
    waits: list[float] = []

    def busy(request: httpx.Request) -> httpx.Response:
        return httpx.Response(next(answers, 200))

    notifier = WebhookNotifier(
        "https://hooks.example.com/x",
        attempts=4,
        backoff_seconds=1.0,
        transport=httpx.MockTransport(busy),
        sleep=lambda seconds: waits.append(float(seconds)),
    )
    assert notifier.send(NOTICE) is True
    assert len(waits) == 3
    assert all(0.0 <= w <= window for w, window in zip(waits, [1.0, 2.0, 4.0], strict=True))
    assert waits != [1.0, 2.0, 4.0]


def test_a_connection_error_is_retried_and_named_when_it_persists(
    caplog: pytest.LogCaptureFixture,
) -> None:
    waits: list[float] = []

    def unreachable(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    notifier = WebhookNotifier(
        "https://hooks.example.com/x",
        attempts=3,
        transport=httpx.MockTransport(unreachable),
        sleep=lambda seconds: waits.append(float(seconds)),
    )
    with caplog.at_level(logging.WARNING):
        assert notifier.send(NOTICE) is False
    assert len(waits) == 2
    assert "(ConnectError)" in caplog.text


def test_a_refusal_waits_for_nothing() -> None:
    waits: list[float] = []
    notifier = WebhookNotifier(
        "https://hooks.example.com/x",
        transport=httpx.MockTransport(lambda request: httpx.Response(400)),
        sleep=lambda seconds: waits.append(float(seconds)),
    )
    assert notifier.send(NOTICE) is False
    assert waits == []
