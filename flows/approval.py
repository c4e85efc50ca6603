"""The human side of the approval gate: the typed form a reviewer fills in to resume a run."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Literal

from prefect import get_run_logger
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import State
from prefect.context import FlowRunContext
from prefect.input import Keyset, RunInput, keyset_from_paused_state
from prefect.states import Paused, Running
from prefect.utilities.engine import propose_state_sync
from pydantic import Field

from modelferry.approval import ApprovalDecision, GateResult
from modelferry.approval.pause import APPROVAL_PAUSE_KEY, SERVER_GRACE_SECONDS
from tasks.sync_calls import call_sync

#: What a reviewer answers; `modelferry approve` sends "approve", or "reject" with --reject.
ReviewerChoice = Literal["approve", "reject"]


class ApprovalInput(RunInput):
    """What a reviewer answers when resuming a paused `train-and-register` run.

    The Prefect UI renders this as the "Resume Flow Run" form; `modelferry approve` sends
    the same fields through the API. The decision has no default, so the form cannot be
    submitted (and the API refuses an answer) until the reviewer picks one explicitly.
    """

    decision: ReviewerChoice = Field(
        description="approve: the challenger becomes champion; reject: the champion stays.",
    )
    reviewer: str = Field(
        min_length=1,
        max_length=200,
        description="Who decided; stored on the model version for the audit trail.",
    )
    comment: str = Field(
        default="",
        max_length=2000,
        description="Why; stored on the model version with the decision.",
    )

    @property
    def approved(self) -> bool:
        """True when the reviewer chose to promote the challenger."""
        return self.decision == "approve"


def ask_reviewer(
    report: str,
    mode: str,
    gate: GateResult,
    timeout_seconds: int,
    poll_seconds: int,
    flow_run_id: str | None,
    on_paused: Callable[[], None] | None = None,
) -> ApprovalDecision:
    """Pause this flow run until a reviewer submits the form, or the timeout passes.

    `on_paused` runs once the run is paused and the form is ready (to notify reviewers).
    A timeout is a recorded rejection (`timed_out`), never a crash.
    """
    with get_client(sync_client=True) as client:
        api_url = str(client.api_url).rstrip("/")
    deadline = datetime.now(UTC) + timedelta(seconds=timeout_seconds)
    get_run_logger().info(
        "Waiting up to %s (until %s) for a reviewer: resume this run in the Prefect UI, "
        "or run `modelferry approve %s --reviewer NAME [--reject] --api-url %s`",
        _duration(timeout_seconds),
        deadline.strftime("%Y-%m-%d %H:%M:%S UTC"),
        flow_run_id,
        api_url,
    )
    form = ApprovalInput.with_initial_data(description=report)
    answer = _pause_for_input(
        form, timeout_seconds, max(1, min(poll_seconds, timeout_seconds)), on_paused
    )
    if answer is None:
        return ApprovalDecision(
            status="timed_out",
            mode=mode,
            decided_by="nobody",
            gate_passed=gate.passed,
            comment=f"no reviewer answered within {_duration(timeout_seconds)}",
            flow_run_id=flow_run_id,
        )
    return ApprovalDecision(
        status="approved" if answer.approved else "rejected",
        mode=mode,
        decided_by=answer.reviewer,
        gate_passed=gate.passed,
        comment=answer.comment,
        flow_run_id=flow_run_id,
    )


def _pause_for_input(
    form: type[ApprovalInput],
    timeout_seconds: int,
    poll_seconds: int,
    on_paused: Callable[[], None] | None = None,
) -> ApprovalInput | None:
    """Like `pause_flow_run(wait_for_input=...)`, but a timeout returns None.

    Prefect's server fails a run whose pause deadline has passed, whatever state it
    proposes next ("never resumed"), so a timed-out approval could not end as a recorded
    rejection. The server is therefore given a later deadline than ours: we wait for our
    own deadline, then close the pause by moving the run back to Running, after which a
    late resume is refused as "not paused".
    """
    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        raise RuntimeError("approval can only be requested from inside a flow run")
    run_id = context.flow_run.id
    proposed: State[None] = Paused(
        timeout_seconds=timeout_seconds + SERVER_GRACE_SECONDS,
        reschedule=False,
        pause_key=APPROVAL_PAUSE_KEY,
    )
    keyset = keyset_from_paused_state(proposed)
    proposed.state_details.run_input_keyset = dict(keyset.items())
    with get_client(sync_client=True) as client:
        state = propose_state_sync(client=client, state=proposed, flow_run_id=run_id)
        if state.is_running():  # this pause already happened and was answered
            return call_sync(form.load, keyset)
        if not state.is_paused():
            raise RuntimeError(f"the flow run could not be paused for approval: {state}")
        form.save(keyset)
        if on_paused is not None:
            on_paused()
        deadline = time.monotonic() + timeout_seconds
        while True:
            run = client.read_flow_run(run_id)
            if run.state is not None and run.state.is_running():
                return call_sync(form.load, keyset)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            time.sleep(min(poll_seconds, remaining))
        state = propose_state_sync(
            client=client,
            state=Running(message="Approval timed out"),
            flow_run_id=run_id,
        )
        # A reviewer may have answered between the last look and closing the pause.
        run = client.read_flow_run(run_id)
        if run.state is not None and run.state.is_running() and _has_answer(form, keyset):
            return call_sync(form.load, keyset)
    return None


def _has_answer(form: type[ApprovalInput], keyset: Keyset) -> bool:
    try:
        form.load(keyset)
    except Exception:  # no response stored: the run was moved on by the timeout
        return False
    return True


def _duration(seconds: int) -> str:
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    if seconds % 60 == 0:
        return f"{seconds // 60} min"
    return f"{seconds} s"
