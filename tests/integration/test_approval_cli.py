"""`modelferry pending` / `approve` against a real (temporary) Prefect server.

A tiny flow pauses for an `ApprovalInput` in a background thread, as a real
`train-and-register` run would, and the CLI answers it over the REST API.
"""

from __future__ import annotations

import contextvars
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest
from prefect import flow
from prefect.flow_runs import pause_flow_run

from flows.approval import ApprovalInput
from modelferry.cli import main
from modelferry.errors import OrchestratorError
from modelferry.prefect_api import PausedRun, PrefectApi

pytestmark = pytest.mark.integration

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


def _wait_until_paused(api_url: str, run_name: str, timeout: float = 30.0) -> PausedRun:
    deadline = time.monotonic() + timeout
    with PrefectApi(api_url) as api:
        while time.monotonic() < deadline:
            for run in api.list_paused_runs():
                if run.run_name == run_name and run.waits_for_input:
                    return run
            time.sleep(0.2)
    raise AssertionError(f"flow run {run_name!r} did not pause within {timeout:g} s")


@pytest.fixture
def start_paused_flow(prefect_harness: str) -> Iterator[Callable[[], PausedFlow]]:
    """Start `awaiting_approval` in a thread and return it once it waits for input."""
    executor = ThreadPoolExecutor(max_workers=2)
    started: list[PausedFlow] = []

    def start() -> PausedFlow:
        run_name = f"approval-{uuid.uuid4().hex[:12]}"
        runnable = awaiting_approval.with_options(flow_run_name=run_name)
        # Prefect's settings (the harness's API URL) live in context variables.
        context = contextvars.copy_context()
        result = executor.submit(context.run, runnable)
        try:
            paused = PausedFlow(_wait_until_paused(prefect_harness, run_name), result)
        except AssertionError:
            if result.done():
                result.result()  # surface the flow's own error instead
            raise
        started.append(paused)
        return paused

    yield start
    # A failed test may leave its run paused: reject it so the thread ends now, not in 60 s.
    for paused in started:
        if not paused.result.done():
            try:
                with PrefectApi(prefect_harness) as api:
                    api.resume(paused.run.id, {"decision": "reject", "reviewer": "teardown"})
            except OrchestratorError:
                pass
    executor.shutdown(wait=True, cancel_futures=True)


def test_pending_then_approve(
    prefect_harness: str,
    start_paused_flow: Callable[[], PausedFlow],
    capsys: pytest.CaptureFixture[str],
) -> None:
    paused = start_paused_flow()

    assert main(["pending", "--api-url", prefect_harness]) == 0
    listing = capsys.readouterr().out
    line = next(line for line in listing.splitlines() if paused.run.id in line)
    assert "approval-cli-test" in line
    assert paused.run.run_name in line

    approve = ["approve", paused.run.id, "--reviewer", "alice", "--comment", "ok"]
    code = main([*approve, "--api-url", prefect_harness])

    out, err = capsys.readouterr()
    assert code == 0, err
    assert "Approved" in out
    assert paused.result.result(timeout=RESULT_TIMEOUT) == {
        "decision": "approve",
        "reviewer": "alice",
        "comment": "ok",
    }


def test_reject_after_invalid_input_is_refused(
    prefect_harness: str,
    start_paused_flow: Callable[[], PausedFlow],
    capsys: pytest.CaptureFixture[str],
) -> None:
    paused = start_paused_flow()
    # The server validates against the form's schema: it forbids unknown fields, and the
    # decision is an explicit choice without a default (the old `approve` flag is gone).
    refused = [
        {"decision": "approve", "reviewer": "mallory", "bogus": 1},
        {"reviewer": "mallory"},
        {"approve": True, "reviewer": "mallory"},
        {"decision": "maybe", "reviewer": "mallory"},
    ]
    with PrefectApi(prefect_harness) as api:
        for run_input in refused:
            with pytest.raises(OrchestratorError, match="REJECT"):
                api.resume(paused.run.id, run_input)
    assert not paused.result.done()

    code = main(
        ["approve", paused.run.id, "--reviewer", "bob", "--reject", "--api-url", prefect_harness]
    )

    out, err = capsys.readouterr()
    assert code == 0, err
    assert "Rejected" in out
    assert paused.result.result(timeout=RESULT_TIMEOUT) == {
        "decision": "reject",
        "reviewer": "bob",
        "comment": "",
    }


def test_approve_completed_run_is_not_paused(
    prefect_harness: str, capsys: pytest.CaptureFixture[str]
) -> None:
    state = finishes_at_once(return_state=True)
    run_id = str(state.state_details.flow_run_id)

    assert main(["approve", run_id, "--reviewer", "alice", "--api-url", prefect_harness]) == 1

    err = capsys.readouterr().err
    assert "not paused" in err
    assert "Completed" in err


def test_approve_unknown_run_is_not_found(
    prefect_harness: str, capsys: pytest.CaptureFixture[str]
) -> None:
    unknown = str(uuid.uuid4())

    assert main(["approve", unknown, "--reviewer", "alice", "--api-url", prefect_harness]) == 1

    err = capsys.readouterr().err
    assert "not found" in err
    assert unknown in err
