"""The failure-notice automation: what it reacts to, and the JSON its template renders.

The template is rendered here by Prefect's own server-side renderer and filters, with the
server's own schema objects, as the actions service renders it.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from prefect.events.actions import CallWebhook
from prefect.server.events.jinja_filters import all_filters
from prefect.server.events.schemas.events import ReceivedEvent
from prefect.server.schemas.core import Deployment, Flow, FlowRun
from prefect.server.utilities.user_templates import (
    register_user_template_filters,
    render_user_template_sync,
    validate_user_template,
)

from deployments.failure_notices import (
    FAILED_STATES,
    PAYLOAD_TEMPLATE,
    failure_notice_automation,
    main,
)
from modelferry.notify import RUN_FAILED, Notification


def _render(state: str, message: str | None) -> dict[str, Any]:
    register_user_template_filters(all_filters)
    flow = Flow(name="batch-score")
    run = FlowRun(flow_id=flow.id, name="sly-fox")
    deployment = Deployment(name="daily", flow_id=flow.id)
    resource = {
        "prefect.resource.id": f"prefect.flow-run.{run.id}",
        "prefect.state-name": state,
        "prefect.state-type": state.upper(),
    }
    if message is not None:
        resource["prefect.state-message"] = message
    event = ReceivedEvent(
        occurred=datetime(2026, 12, 7, 2, 0, 5, tzinfo=UTC),
        event=f"prefect.flow-run.{state}",
        resource=resource,
        id=uuid.uuid4(),
    )
    context = {"event": event, "flow": flow, "flow_run": run, "deployment": deployment}
    rendered: dict[str, Any] = json.loads(render_user_template_sync(PAYLOAD_TEMPLATE, context))
    assert rendered["details"]["flow_run_id"] == str(run.id)
    assert rendered["details"]["deployment_id"] == str(deployment.id)
    return rendered


def test_the_template_is_valid_for_the_server() -> None:
    register_user_template_filters(all_filters)
    validate_user_template(PAYLOAD_TEMPLATE)


def test_the_notice_has_the_fields_of_modelferrys_own_notices() -> None:
    rendered = _render("Failed", "Flow run encountered an exception: boom")
    own = Notification(event=RUN_FAILED, title="t", text="x").payload()
    assert set(rendered) == set(own)
    assert rendered["event"] == RUN_FAILED
    assert rendered["title"] == "batch-score run sly-fox ended FAILED"
    assert rendered["text"] == "Flow run encountered an exception: boom"
    assert rendered["details"]["state"] == "Failed"
    assert rendered["details"]["deployment"] == "daily"
    assert rendered["sent_at"] == "2026-12-07T02:00:05+00:00"


def test_quotes_newlines_and_markup_in_the_message_still_make_valid_json() -> None:
    message = 'cannot read "data/x.csv"\n\tline 2 </script> {{ not a template }} \\'
    assert _render("Failed", message)["text"] == message


@pytest.mark.parametrize("state", ["Crashed", "Cancelled"])
def test_a_run_without_a_message_says_how_it_ended(state: str) -> None:
    rendered = _render(state, None)
    assert rendered["text"] == f"the run ended {state}"
    assert rendered["title"].endswith(f"ended {state.upper()}")


def test_the_automation_reacts_to_failed_deployment_runs_of_modelferry_only() -> None:
    block_id = uuid.uuid4()
    automation = failure_notice_automation(block_id)
    trigger = automation.trigger
    assert trigger.expect == {f"prefect.flow-run.{s}" for s in FAILED_STATES}
    assert {"Failed", "Crashed", "Cancelled", "TimedOut"} == set(FAILED_STATES)
    related = [spec.root for spec in trigger.match_related]  # type: ignore[union-attr]
    assert {"prefect.resource.role": "deployment"} in related
    assert {"prefect.resource.role": "tag", "prefect.resource.id": "prefect.tag.modelferry"} in (
        related
    )
    assert trigger.threshold == 1
    (action,) = automation.actions
    assert isinstance(action, CallWebhook)
    assert action.block_document_id == block_id


def test_the_command_without_a_webhook_says_how_to_configure_one(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("MODELFERRY_WEBHOOK_URL", raising=False)
    monkeypatch.delenv("MODELFERRY_WEBHOOK_BLOCK", raising=False)
    assert main([]) == 2
    assert "set MODELFERRY_WEBHOOK_URL" in capsys.readouterr().err


def test_the_command_refuses_a_webhook_that_is_not_http_without_echoing_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MODELFERRY_WEBHOOK_URL", "ftp://hooks.example.com/T0KEN")
    monkeypatch.delenv("MODELFERRY_WEBHOOK_BLOCK", raising=False)
    assert main([]) == 2
    err = capsys.readouterr().err
    assert "http(s) URL" in err
    assert "T0KEN" not in err
