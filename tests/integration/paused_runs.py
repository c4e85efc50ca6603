"""Flow runs that wait for approval on the test Prefect server, for the approval tests.

`PausedFlows` runs a tiny flow that pauses for an `ApprovalInput` in a background thread,
as a real `train-and-register` run would. `set_paused` puts a flow run straight into a
paused state through Prefect's client, for the cases a live flow cannot hold still in
(a form whose schema is never saved, a pause without a form).
"""

from __future__ import annotations

import contextvars
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from prefect import flow
from prefect.client.orchestration import get_client
from prefect.flow_runs import pause_flow_run
from prefect.input.run_input import keyset_from_base_key
from prefect.states import Cancelled, Paused, Running

from flows.approval import ApprovalInput
from modelferry.errors import OrchestratorError
from modelferry_prefect.approvals import PausedRun, connect

RESULT_TIMEOUT = 30.0


@flow(name="approval-cli-test")
def awaiting_approval() -> dict[str, Any]:
    """Pause for a reviewer's decision, like the approval gate, and return it."""
    answer = pause_flow_run(
        wait_for_input=ApprovalInput.with_initial_data(description="table", reviewer="?"),
        timeout=60,
        poll_interval=1,
    )
    return answer.model_dump(include={"decision", "reviewer", "comment"})


@flow(name="approval-cli-test-done")
def finishes_at_once() -> int:
    """A flow that completes without pausing."""
    return 1


@dataclass
class PausedFlow:
    """A background flow run that is paused waiting for approval."""

    run: PausedRun
    result: Future[dict[str, Any]]


class PausedFlows:
    """Starts `awaiting_approval` runs; on exit rejects any still waiting, so none lingers.

    Args:
        api_url: The test server's API root.
    """

    def __init__(self, api_url: str) -> None:
        self.api_url = api_url
        self._executor = ThreadPoolExecutor(max_workers=2)
        self._started: list[PausedFlow] = []

    def start(self) -> PausedFlow:
        """Start a run and return it once it waits for input."""
        run_name = f"approval-{uuid.uuid4().hex[:12]}"
        runnable = awaiting_approval.with_options(flow_run_name=run_name)
        # Prefect's settings (the harness's API URL) live in context variables.
        context = contextvars.copy_context()
        result = self._executor.submit(context.run, runnable)
        try:
            paused = PausedFlow(self._wait_until_paused(run_name), result)
        except AssertionError:
            if result.done():
                result.result()  # surface the flow's own error instead
            raise
        self._started.append(paused)
        return paused

    def _wait_until_paused(self, run_name: str, timeout: float = 30.0) -> PausedRun:
        deadline = time.monotonic() + timeout
        with connect(self.api_url) as approvals:
            while time.monotonic() < deadline:
                for run in approvals.list_paused_runs():
                    if run.run_name == run_name and run.waits_for_input:
                        return run
                time.sleep(0.2)
        raise AssertionError(f"flow run {run_name!r} did not pause within {timeout:g} s")

    def __enter__(self) -> PausedFlows:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # A failed test may leave its run paused: reject it so the thread ends now, not in 60 s.
        for paused in self._started:
            if not paused.result.done():
                try:
                    with connect(self.api_url) as approvals:
                        approvals.resume(paused.run.id, {"decision": "reject", "reviewer": "-"})
                except OrchestratorError:
                    pass
        self._executor.shutdown(wait=True, cancel_futures=True)


def set_paused(
    *, with_form: bool, pause_key: str | None = None, timeout_seconds: int = 600
) -> uuid.UUID:
    """Create a flow run and force it into a Paused state; returns its id.

    With `with_form` the pause names input keys as `pause_flow_run(wait_for_input=...)`
    does, but no flow ever saves the form's schema under them.
    """
    with get_client(sync_client=True) as client:
        run = client.create_flow_run(finishes_at_once)
        client.set_flow_run_state(run.id, Running(), force=True)
        state = Paused(timeout_seconds=timeout_seconds, pause_key=pause_key)
        if with_form:
            state.state_details.run_input_keyset = keyset_from_base_key(f"paused-{pause_key}")
        client.set_flow_run_state(run.id, state, force=True)
    return run.id


def cancel(flow_run_id: uuid.UUID) -> None:
    """Take a run made by `set_paused` out of the paused runs other tests list."""
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(flow_run_id, Cancelled(), force=True)
