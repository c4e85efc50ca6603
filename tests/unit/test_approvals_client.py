"""The parts of `modelferry_prefect` that need no server: settings, messages, timing.

What the client does against a Prefect server is tested with a real one, in
tests/integration/test_approval_cli.py and test_approval_settings.py.
"""

from __future__ import annotations

import json

import httpx
import pytest
from prefect.client.schemas import OrchestrationResult
from prefect.client.schemas.responses import (
    SetStateStatus,
    StateAbortDetails,
    StateAcceptDetails,
    StateRejectDetails,
    StateWaitDetails,
)
from prefect.settings import (
    PREFECT_API_AUTH_STRING,
    PREFECT_API_KEY,
    PREFECT_API_URL,
    temporary_settings,
)

from modelferry.errors import FlowRunNotFoundError, FlowRunNotPausedError, OrchestratorError
from modelferry_prefect.api_errors import redacted_url, translated_errors
from modelferry_prefect.approvals import check_resume_result, connect, wait_for_input_schema

API_URL = "http://prefect.test/api"
API_KEY = "pnu_super-secret-key-1234"
AUTH_STRING = "admin:auth-secret-5678"
LABEL = "flow run 0d4c (papaya-stork)"


class FakeClock:
    """A monotonic clock that moves only when `sleep` is called."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


# ---------------------------------------------------------------------- settings


def test_connect_without_any_api_url_says_how_to_set_one() -> None:
    with (
        temporary_settings(restore_defaults={PREFECT_API_URL}),
        pytest.raises(OrchestratorError) as caught,
    ):
        connect()

    message = str(caught.value)
    assert (
        "PREFECT_API_URL is not set (in the environment or the active Prefect profile)" in message
    )
    assert "prefect server start" in message
    assert "prefect config set PREFECT_API_URL=http://127.0.0.1:4200/api" in message
    assert "--api-url" in message


def test_connect_takes_the_url_from_prefects_settings_unless_given() -> None:
    with temporary_settings({PREFECT_API_URL: "http://from-profile.test:4200/api"}):
        assert connect().api_url == "http://from-profile.test:4200/api"
        assert connect("http://other.test/api").api_url == "http://other.test/api"


def test_connect_refuses_a_url_that_is_not_http() -> None:
    with pytest.raises(OrchestratorError, match="is not an http"):
        connect("ftp://prefect.test/api")


def test_secrets_stay_out_of_the_repr() -> None:
    with temporary_settings({PREFECT_API_KEY: API_KEY, PREFECT_API_AUTH_STRING: AUTH_STRING}):
        approvals = connect("http://reviewer:hunter2@prefect.test/api?token=t0ken")

    shown = repr(approvals)
    assert shown == "PrefectApprovals(api_url='http://prefect.test/api')"
    for secret in (API_KEY, AUTH_STRING, "hunter2", "t0ken"):
        assert secret not in shown


def test_a_malformed_id_is_not_found_before_any_request() -> None:
    # Nothing listens on prefect.test: a request would fail as unreachable instead.
    with connect(API_URL) as approvals, pytest.raises(FlowRunNotFoundError) as caught:
        approvals.resume("not-a-uuid", {})

    assert "'not-a-uuid'" in str(caught.value)
    assert "modelferry pending" in str(caught.value)


# ---------------------------------------------------------------------- messages


def test_redacted_url_drops_credentials_query_and_trailing_slash() -> None:
    assert (
        redacted_url("https://u:p@prefect.test:4200/api/?k=v#x") == "https://prefect.test:4200/api"
    )


def _failing(status: int, body: object, path: str = "/api/flow_runs/filter") -> Exception:
    request = httpx.Request("POST", f"http://prefect.test{path}")
    response = httpx.Response(status, json=body, request=request)
    return httpx.HTTPStatusError("failed", request=request, response=response)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            _failing(401, {"exception_message": "Unauthorized"}),
            "the Prefect API at http://prefect.test/api refused the request (HTTP 401); "
            "check PREFECT_API_KEY (Prefect Cloud) or PREFECT_API_AUTH_STRING",
        ),
        (_failing(403, {"detail": "Forbidden"}), "(HTTP 403); check PREFECT_API_KEY"),
        (_failing(404, {"detail": "Not Found"}), "ending in /api"),
        (
            _failing(500, {"exception_message": "database is locked"}),
            "answered POST /api/flow_runs/filter with HTTP 500: database is locked",
        ),
        (
            httpx.ConnectError("[Errno 111] Connection refused"),
            "cannot reach the Prefect API at http://prefect.test/api (ConnectError); check the "
            "server is running: start one with `prefect server start`",
        ),
        (
            httpx.ConnectError("[SSL: CERTIFICATE_VERIFY_FAILED] self-signed certificate"),
            "the TLS handshake failed; check PREFECT_API_SSL_CERT_FILE",
        ),
        (httpx.ReadTimeout("timed out"), "did not answer in time"),
        (json.JSONDecodeError("Expecting value", "<html>", 0), "ending in /api"),
    ],
    ids=["401", "403", "no-route", "500", "refused", "tls", "timeout", "not-json"],
)
def test_client_failures_become_orchestrator_errors_that_say_what_to_do(
    error: Exception, expected: str
) -> None:
    with (
        pytest.raises(OrchestratorError) as caught,
        translated_errors("http://u:pw@prefect.test/api"),
    ):
        raise error

    assert expected in str(caught.value)
    assert "pw" not in str(caught.value)


def _result(status: SetStateStatus, details: object) -> OrchestrationResult[object]:
    return OrchestrationResult(state=None, status=status, details=details)


def test_an_accepted_resume_passes() -> None:
    check_resume_result(_result(SetStateStatus.ACCEPT, StateAcceptDetails()), LABEL)


def test_input_refused_by_the_form_says_what_was_wrong() -> None:
    reason = "Run input validation failed: 'decision' is a required property"
    rejected = _result(SetStateStatus.REJECT, StateRejectDetails(reason=reason))

    with pytest.raises(OrchestratorError) as caught:
        check_resume_result(rejected, LABEL)

    assert str(caught.value) == f"Prefect did not resume {LABEL}: REJECT: {reason}"


def test_a_run_resumed_meanwhile_is_not_paused() -> None:
    aborted = _result(
        SetStateStatus.ABORT,
        StateAbortDetails(reason="Cannot resume a flow run that is not paused."),
    )

    with pytest.raises(FlowRunNotPausedError, match="not paused"):
        check_resume_result(aborted, LABEL)


def test_a_wait_answer_says_how_long() -> None:
    waiting = _result(SetStateStatus.WAIT, StateWaitDetails(delay_seconds=5))

    with pytest.raises(OrchestratorError, match="asked to wait 5 s before resuming"):
        check_resume_result(waiting, LABEL)


# ------------------------------------------------------------------ schema wait


def test_the_schema_wait_returns_as_soon_as_the_form_is_saved() -> None:
    clock = FakeClock()
    answers = iter([False, False, True])

    wait_for_input_schema(
        lambda: next(answers),
        label=LABEL,
        timeout=10,
        poll_interval=0.25,
        clock=clock,
        sleep=clock.sleep,
    )

    assert clock.sleeps == [0.25, 0.25]


def test_the_schema_wait_checks_once_more_at_the_deadline_then_gives_up() -> None:
    clock = FakeClock()
    checks: list[float] = []

    def never() -> bool:
        checks.append(clock.now - 100.0)
        return False

    with pytest.raises(OrchestratorError) as caught:
        wait_for_input_schema(
            never, label=LABEL, timeout=1.0, poll_interval=0.4, clock=clock, sleep=clock.sleep
        )

    # The last sleep is cut to the deadline, so the final check is exactly at 1 s.
    assert checks == pytest.approx([0.0, 0.4, 0.8, 1.0])
    assert clock.sleeps == pytest.approx([0.4, 0.4, 0.2])
    assert str(caught.value).startswith(
        f"{LABEL} is paused but has not saved its approval form after 1 s"
    )


def test_a_zero_schema_timeout_still_checks_once() -> None:
    clock = FakeClock()
    checks: list[float] = []

    wait_for_input_schema(
        lambda: checks.append(clock.now) is None,
        label=LABEL,
        timeout=0,
        poll_interval=0.25,
        clock=clock,
        sleep=clock.sleep,
    )

    assert checks == [100.0]
    assert clock.sleeps == []
