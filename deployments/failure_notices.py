"""Failure notices as a Prefect Automation: `python -m deployments.failure_notices`.

    export PREFECT_API_URL=http://SERVER:4200/api MODELFERRY_WEBHOOK_URL=https://hooks...
    python -m deployments.failure_notices

The server, not the run, sends the notice: a state hook in the flow's own process never
runs when that process is killed (out of memory, a node drained, `kill -9`) or when the
run is cancelled, so the notice was missing exactly when an unattended night needed one.
The automation reacts to `prefect.flow-run.Failed`, `Crashed`, `Cancelled` and `TimedOut`
events of deployment runs tagged `modelferry` (every deployment in prefect.yaml; a
subflow is not a deployment run, so one failure sends one notice) and posts, with
Prefect's `Webhook` block, the JSON that `modelferry.notify` sends for approvals:

    {"event": "run.failed", "title": "...", "text": "...", "flow_run_url": "...",
     "details": {...}, "sent_at": "..."}

The webhook comes from `MODELFERRY_WEBHOOK_BLOCK` (a saved `WebhookNotification`) or
`MODELFERRY_WEBHOOK_URL`, as for approval notices, and is saved as the Prefect `Webhook`
block `modelferry-failure-notices` that the server calls (the URL stays a secret there).
Running the command again updates the block and the automation in place.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import dataclass
from typing import Final
from uuid import UUID

from prefect.automations import Automation
from prefect.blocks.webhook import Webhook
from prefect.events.actions import CallWebhook
from prefect.events.schemas.automations import EventTrigger, Posture
from prefect.exceptions import ObjectNotFound
from prefect.types import SecretDict
from pydantic import SecretStr

from flows.notifications import resolve_webhook_url
from modelferry.notify import RUN_FAILED, WebhookNotifier

#: The automation's name: the command finds it by this name to update it in place.
AUTOMATION_NAME: Final = "modelferry: failed, crashed or cancelled runs"
#: The Prefect `Webhook` block the automation calls.
WEBHOOK_BLOCK_NAME: Final = "modelferry-failure-notices"
#: The tag every modelferry deployment carries (prefect.yaml).
DEPLOYMENT_TAG: Final = "modelferry"
#: The flow-run states worth waking someone for.
FAILED_STATES: Final = ("Failed", "Crashed", "Cancelled", "TimedOut")

# Rendered by the server (Prefect's sandboxed Jinja) for each event; `tojson` escapes every
# value, so a state message holding quotes or newlines still makes valid JSON. The same
# fields as `modelferry.notify.Notification.payload()`.
PAYLOAD_TEMPLATE: Final = (
    """\
{%- set url = flow_run|ui_url -%}
{%- set state = event.resource["prefect.state-name"] -%}
{%- set message = event.resource["prefect.state-message"] or ("the run ended " ~ state) -%}
{"event": "EVENT",
 "title": {{ (flow.name ~ " run " ~ flow_run.name ~ " ended "
              ~ event.resource["prefect.state-type"]) | tojson }},
 "text": {{ (message ~ ("\\n" ~ url if url else "")) | tojson }},
 "flow_run_url": {{ url | tojson }},
 "details": {"flow": {{ flow.name | tojson }},
             "flow_run_id": {{ flow_run.id | string | tojson }},
             "flow_run_name": {{ flow_run.name | tojson }},
             "state": {{ state | tojson }},
             "deployment_id": {{ deployment.id | string | tojson }},
             "deployment": {{ deployment.name | tojson }}},
 "sent_at": {{ event.occurred.isoformat(timespec="seconds") | tojson }}}
"""
).replace("EVENT", RUN_FAILED)


@dataclass(frozen=True)
class FailureNotices:
    """What `set_up_failure_notices` saved."""

    automation_id: UUID
    webhook_block_id: UUID
    created: bool


def failure_notice_automation(webhook_block_id: UUID) -> Automation:
    """The automation that posts a notice for each failed modelferry deployment run."""
    return Automation(
        name=AUTOMATION_NAME,
        description=(
            "Posts modelferry's run.failed notice to a webhook when a deployment run "
            "fails, crashes (its process was killed), is cancelled or times out."
        ),
        trigger=EventTrigger(
            match={"prefect.resource.id": "prefect.flow-run.*"},
            match_related=[
                {
                    "prefect.resource.role": "tag",
                    "prefect.resource.id": f"prefect.tag.{DEPLOYMENT_TAG}",
                },
                {"prefect.resource.role": "deployment"},
            ],
            expect={f"prefect.flow-run.{state}" for state in FAILED_STATES},
            for_each={"prefect.resource.id"},
            posture=Posture.Reactive,
            threshold=1,
        ),
        actions=[CallWebhook(block_document_id=webhook_block_id, payload=PAYLOAD_TEMPLATE)],
    )


def set_up_failure_notices(url: SecretStr) -> FailureNotices:
    """Save the webhook block and create, or update in place, the failure automation."""
    # The async API, run here: Prefect types the sync `Automation.read` as a coroutine.
    return asyncio.run(_set_up_failure_notices(url))


async def _set_up_failure_notices(url: SecretStr) -> FailureNotices:
    webhook = Webhook(
        method="POST",
        url=url,
        headers=SecretDict({"Content-Type": "application/json"}),
    )
    block_id = await webhook.asave(WEBHOOK_BLOCK_NAME, overwrite=True)
    wanted = failure_notice_automation(block_id)
    try:
        existing = await Automation.aread(name=AUTOMATION_NAME)
    except (ValueError, ObjectNotFound):  # read() raises ValueError for an unknown name
        created = await wanted.acreate()
        return FailureNotices(_saved_id(created), block_id, created=True)
    wanted.id = _saved_id(existing)
    await wanted.aupdate()
    return FailureNotices(wanted.id, block_id, created=False)


def _saved_id(automation: Automation) -> UUID:
    """The id of an automation the server returned (only an unsaved one has none)."""
    if automation.id is None:
        raise RuntimeError(f"the Prefect API returned automation {automation.name!r} without an id")
    return automation.id


def main(argv: list[str] | None = None) -> int:
    """Set up failure notices from the configured webhook; 2 when none is configured."""
    parser = argparse.ArgumentParser(prog="python -m deployments.failure_notices")
    parser.description = __doc__.split("\n", 1)[0] if __doc__ else None
    parser.parse_args(argv)
    try:
        url = resolve_webhook_url()
        # Checks the URL the way approval notices do, and names only its scheme and host.
        notifier = WebhookNotifier(url) if url is not None else None
    except Exception as exc:  # a block that cannot be loaded names itself in the message
        print(f"cannot read the webhook: {exc}", file=sys.stderr)
        return 2
    if url is None or notifier is None:
        print(
            "no webhook configured: set MODELFERRY_WEBHOOK_URL, or save a WebhookNotification "
            "block and name it in MODELFERRY_WEBHOOK_BLOCK",
            file=sys.stderr,
        )
        return 2
    done = set_up_failure_notices(url)
    verb = "Created" if done.created else "Updated"
    print(
        f"{verb} the automation {AUTOMATION_NAME!r} ({done.automation_id}): failed, crashed, "
        f"cancelled and timed-out runs of deployments tagged {DEPLOYMENT_TAG!r} post to "
        f"{notifier.target} (Prefect Webhook block {WEBHOOK_BLOCK_NAME!r})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
