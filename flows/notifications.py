"""Tell people when a run needs them: waiting for approval, or failed.

The webhook comes from `MODELFERRY_WEBHOOK_URL`, or from a saved `WebhookNotification`
block named in `MODELFERRY_WEBHOOK_BLOCK`; with neither, nothing is sent.
`notify_approval_pending` is called once a run is paused for a reviewer.

A failed deployment run is announced by the server, through the automation that
`python -m deployments.failure_notices` sets up: it also sees runs whose process was
killed and runs that were cancelled, where no hook in the run's own process ever runs.
`notify_failure` is the state hook (`on_failure=[...]`, `on_crashed=[...]`) for runs
started without a deployment (`python -m flows.retrain_and_deliver` from a cron job, say);
it stays silent for deployment runs so that one failure sends one notice.
"""

from __future__ import annotations

import logging
from typing import Any

from prefect.client.schemas.objects import FlowRun, State
from prefect.settings import PREFECT_API_URL
from prefect.utilities.urls import url_for
from pydantic import SecretStr

from blocks.notifications import WebhookNotification
from modelferry.notify import (
    APPROVAL_PENDING,
    RUN_FAILED,
    Notification,
    WebhookNotifier,
    notifier_from_env,
)
from modelferry.settings import load_settings

log = logging.getLogger(__name__)


def resolve_webhook_block() -> WebhookNotification | None:
    """The `WebhookNotification` block named in MODELFERRY_WEBHOOK_BLOCK, if one is."""
    block_name = (load_settings().webhook_block or "").strip()
    if not block_name:
        return None
    block = WebhookNotification.load(block_name)
    assert isinstance(block, WebhookNotification)
    return block


def resolve_webhook_url() -> SecretStr | None:
    """The configured webhook's URL (a secret), or None when notifications are not set up."""
    block = resolve_webhook_block()
    if block is not None:
        return block.url
    url = load_settings().webhook_url
    return SecretStr(url.get_secret_value().strip()) if url is not None else None


def resolve_notifier() -> WebhookNotifier | None:
    """The configured webhook, or None when notifications are not set up."""
    block = resolve_webhook_block()
    if block is not None:
        return block.get_notifier()
    return notifier_from_env()


def flow_run_url(flow_run_id: Any) -> str | None:
    """The flow run's page in the Prefect UI (or, without a UI URL, beside the API)."""
    url = url_for("flow-run", obj_id=str(flow_run_id))
    if url:
        return url
    api = str(PREFECT_API_URL.value() or "").rstrip("/")
    if not api:
        return None
    return f"{api.removesuffix('/api')}/runs/flow-run/{flow_run_id}"


def _send(notification: Notification) -> None:
    try:
        notifier = resolve_notifier()
    except Exception as exc:  # a missing block must not turn a notice into a second failure
        log.warning("notifications are misconfigured (%s); nothing was sent", exc)
        return
    if notifier is not None:
        notifier.send(notification)


def notify_failure(flow: Any, flow_run: FlowRun, state: State) -> None:
    """State hook: the run failed or crashed; say which, why and where to look.

    A subflow's failure is left to its parent flow's hook, and a deployment run's to the
    server's automation (`deployments.failure_notices`), so one failure sends one notice.
    """
    if flow_run.parent_task_run_id is not None or flow_run.deployment_id is not None:
        return
    name = getattr(flow, "name", flow_run.flow_id)
    _send(
        Notification(
            event=RUN_FAILED,
            title=f"{name} run {flow_run.name} ended {state.type.value}",
            text=state.message or f"the run ended {state.name}",
            flow_run_url=flow_run_url(flow_run.id),
            details={
                "flow": name,
                "flow_run_id": str(flow_run.id),
                "flow_run_name": flow_run.name,
                "state": state.name,
                "deployment_id": str(flow_run.deployment_id) if flow_run.deployment_id else None,
            },
        )
    )


def notify_approval_pending(
    flow_run_id: Any, model_name: str, version: str, summary: str, timeout: str
) -> None:
    """A run is paused until a reviewer resumes it."""
    _send(
        Notification(
            event=APPROVAL_PENDING,
            title=f"{model_name} version {version} waits for approval",
            text=f"{summary}\nResume the run to approve or reject it within {timeout}.",
            flow_run_url=flow_run_url(flow_run_id),
            details={
                "model_name": model_name,
                "model_version": version,
                "flow_run_id": str(flow_run_id),
            },
        )
    )
