"""Notifications to people: a run waits for approval, a run failed.

A `WebhookNotifier` posts one JSON document per event to a URL (a chat or incident tool's
incoming webhook, an automation endpoint). The body carries `text` (what chat webhooks
show) and structured fields for tools that route on them:

    {"event": "approval.pending", "title": "...", "text": "...",
     "flow_run_url": "http://.../runs/flow-run/<id>", "details": {...}, "sent_at": "..."}

Webhook URLs often embed a token, so the URL is a secret: it never appears in a log line,
an exception or a repr; only its scheme and host are ever shown. Connection errors, HTTP
5xx and 429 are retried with exponential backoff and jitter (`modelferry.retrying`); other
answers are final. A notification that cannot be delivered is logged as a warning and
reported as False; it never fails the run that sent it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from pydantic import SecretStr

from modelferry.errors import InvalidConfigError
from modelferry.retrying import Backoff
from modelferry.settings import load_settings

log = logging.getLogger(__name__)

WEBHOOK_URL_ENV = "MODELFERRY_WEBHOOK_URL"

APPROVAL_PENDING = "approval.pending"
RUN_FAILED = "run.failed"


@dataclass(frozen=True)
class Notification:
    """One event worth telling people about."""

    event: str
    title: str
    text: str
    flow_run_url: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    def payload(self) -> dict[str, Any]:
        """The JSON body a webhook receives."""
        text = self.text if not self.flow_run_url else f"{self.text}\n{self.flow_run_url}"
        return {
            "event": self.event,
            "title": self.title,
            "text": text,
            "flow_run_url": self.flow_run_url,
            "details": dict(self.details),
            "sent_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }


class WebhookNotifier:
    """Posts notifications as JSON to a webhook URL, with a few retries."""

    def __init__(
        self,
        url: SecretStr | str,
        *,
        timeout_seconds: float = 5.0,
        attempts: int = 3,
        backoff_seconds: float = 1.0,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """Post to `url` (kept secret).

        Args:
            url: The webhook; it often embeds a token.
            timeout_seconds: Per request.
            attempts: Tries in all, the first included.
            backoff_seconds: Longest wait before the second try; it doubles for each
                further one, and each wait is drawn at random below it (jitter).
            transport: httpx's transport; tests pass a `MockTransport`.
            sleep: Waits between tries; tests pass their own.
        """
        secret = url if isinstance(url, SecretStr) else SecretStr(url)
        parsed = httpx.URL(secret.get_secret_value().strip())
        if parsed.scheme not in {"http", "https"} or not parsed.host:
            raise InvalidConfigError(
                "the notification webhook must be an http(s) URL with a host "
                f"(got a value with scheme {parsed.scheme or 'none'!r}); check {WEBHOOK_URL_ENV} "
                "or the webhook block"
            )
        self._url = secret
        self.target = f"{parsed.scheme}://{parsed.host}"
        self.timeout_seconds = timeout_seconds
        self.attempts = max(1, attempts)
        self.backoff_seconds = backoff_seconds
        self._transport = transport
        self._sleep = sleep

    def __repr__(self) -> str:
        return f"WebhookNotifier(target={self.target!r})"

    def send(self, notification: Notification) -> bool:
        """Post the notification; True when the webhook answered 2xx."""
        problem = ""
        backoff = Backoff.uncapped(max(self.backoff_seconds, 0.0), self.attempts)
        retrying = backoff.retrying((httpx.HTTPError, _Unavailable), sleep=self._sleep)
        with httpx.Client(timeout=self.timeout_seconds, transport=self._transport) as client:
            try:
                for attempt in retrying:
                    with attempt:
                        response = client.post(
                            self._url.get_secret_value().strip(), json=notification.payload()
                        )
                        if response.is_success:
                            return True
                        problem = f"HTTP {response.status_code}"
                        if response.status_code < 500 and response.status_code != 429:
                            break  # the webhook refuses this request; asking again will not help
                        raise _Unavailable(problem)
            except _Unavailable as exc:
                problem = str(exc)
            except httpx.HTTPError as exc:
                problem = type(exc).__name__
        log.warning(
            "could not deliver the %r notification to the webhook at %s (%s); "
            "check the webhook URL and that the receiver is up",
            notification.event,
            self.target,
            problem,
        )
        return False


class _Unavailable(Exception):
    """The webhook answered 5xx or 429: worth asking again."""


def notifier_from_env() -> WebhookNotifier | None:
    """The webhook named by `MODELFERRY_WEBHOOK_URL`, or None when it is unset."""
    url = load_settings().webhook_url
    text = url.get_secret_value().strip() if url is not None else ""
    return WebhookNotifier(SecretStr(text)) if text else None
