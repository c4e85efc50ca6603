"""Notifications from real flow runs: a failed run and a run waiting for approval."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from prefect import flow
from prefect.client.schemas.objects import FlowRun, State, StateType
from prefect.context import get_run_context

from flows.approval import ask_reviewer
from flows.notifications import notify_approval_pending, notify_failure
from modelferry.approval import GateResult
from tests.webhook_receiver import WebhookReceiver, webhook_receiver

pytestmark = pytest.mark.integration


@flow(name="notify-test-fails", on_failure=[notify_failure])
def fails_loudly() -> None:
    raise RuntimeError("the MLflow server at http://mlflow:5000 did not answer")


@flow(name="notify-test-parent", on_failure=[notify_failure])
def parent_of_failing_subflow() -> None:
    fails_loudly()


@flow(name="notify-test-approval")
def waits_for_a_reviewer() -> str:
    run_id = str(get_run_context().flow_run.id)  # type: ignore[union-attr]
    gate = GateResult(passed=True, champion_version=None, rows=())
    decision = ask_reviewer(
        "report",
        "manual",
        gate,
        timeout_seconds=2,
        poll_seconds=1,
        flow_run_id=run_id,
        on_paused=lambda: notify_approval_pending(run_id, "bcc", "7", "The gate passed.", "2 s"),
    )
    return decision.status


@pytest.fixture
def receiver(prefect_harness: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[WebhookReceiver]:
    with webhook_receiver() as receiver:
        monkeypatch.setenv("MODELFERRY_WEBHOOK_URL", receiver.url)
        monkeypatch.delenv("MODELFERRY_WEBHOOK_BLOCK", raising=False)
        yield receiver


def test_failed_run_notifies_once_with_the_reason_and_link(receiver: WebhookReceiver) -> None:
    state = parent_of_failing_subflow(return_state=True)
    assert state.is_failed()
    body = receiver.wait_for("run.failed")
    assert body["details"]["flow"] == "notify-test-parent"
    assert "did not answer" in body["text"]
    run_id = body["details"]["flow_run_id"]
    assert body["flow_run_url"].endswith(f"/runs/flow-run/{run_id}")
    assert [b["event"] for b in receiver.received] == ["run.failed"], "one failure, one notice"


def test_waiting_for_approval_notifies_with_the_run_link(receiver: WebhookReceiver) -> None:
    assert waits_for_a_reviewer() == "timed_out"
    body = receiver.wait_for("approval.pending")
    assert body["title"] == "bcc version 7 waits for approval"
    assert body["details"]["model_version"] == "7"
    assert body["flow_run_url"].endswith(f"/runs/flow-run/{body['details']['flow_run_id']}")
    assert "within 2 s" in body["text"]


def test_the_state_hook_leaves_deployment_runs_to_the_servers_automation(
    receiver: WebhookReceiver,
) -> None:
    failed = State(type=StateType.FAILED, name="Failed", message="boom")
    flow_id = uuid.uuid4()
    by_hand = FlowRun(flow_id=flow_id, name="by-hand")
    deployed = FlowRun(flow_id=flow_id, name="deployed", deployment_id=uuid.uuid4())
    notify_failure(fails_loudly, deployed, failed)
    notify_failure(fails_loudly, by_hand, failed)
    body = receiver.wait_for("run.failed")
    assert body["details"]["flow_run_name"] == "by-hand"
    assert [b["details"]["flow_run_name"] for b in receiver.received] == ["by-hand"]
