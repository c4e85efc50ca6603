"""`modelferry pending` / `approve` against a real (temporary) Prefect server.

A tiny flow pauses for an `ApprovalInput` in a background thread, as a real
`train-and-register` run would, and the CLI answers it through Prefect's own client.
Runs forced into a paused state cover what a live flow cannot hold still in.
"""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta

import pytest
from prefect.client.orchestration import get_client

from modelferry.approval.pause import APPROVAL_PAUSE_KEY, SERVER_GRACE_SECONDS
from modelferry.cli import main
from modelferry.errors import FlowRunNotFoundError, FlowRunNotPausedError, OrchestratorError
from modelferry_prefect.approvals import connect
from tests.integration.paused_runs import (
    RESULT_TIMEOUT,
    PausedFlow,
    PausedFlows,
    cancel,
    finishes_at_once,
    set_paused,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def start_paused_flow(prefect_harness: str) -> Iterator[Callable[[], PausedFlow]]:
    """Start `awaiting_approval` in a thread and return it once it waits for input."""
    with PausedFlows(prefect_harness) as flows:
        yield flows.start


@pytest.fixture
def forced_pause(prefect_harness: str) -> Iterator[Callable[..., uuid.UUID]]:
    """`set_paused`, with every run it made cancelled afterwards."""
    made: list[uuid.UUID] = []

    def pause(*, with_form: bool, pause_key: str | None = None) -> uuid.UUID:
        made.append(set_paused(with_form=with_form, pause_key=pause_key))
        return made[-1]

    yield pause
    for run_id in made:
        cancel(run_id)


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
    # Each message says what was wrong with the input.
    refused = [
        ({"decision": "approve", "reviewer": "mallory", "bogus": 1}, "bogus"),
        ({"reviewer": "mallory"}, "'decision' is a required property"),
        ({"approve": True, "reviewer": "mallory"}, "approve"),
        ({"decision": "maybe", "reviewer": "mallory"}, "'maybe'"),
    ]
    with connect(prefect_harness) as approvals:
        for run_input, wrong in refused:
            with pytest.raises(OrchestratorError, match="REJECT") as caught:
                approvals.resume(paused.run.id, run_input)
            assert wrong in str(caught.value)
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


def test_pending_json_shows_the_deadline_the_approval_run_logged(
    prefect_harness: str,
    forced_pause: Callable[..., uuid.UUID],
    capsys: pytest.CaptureFixture[str],
) -> None:
    run_id = forced_pause(with_form=True, pause_key=APPROVAL_PAUSE_KEY)
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(run_id).state
    assert state is not None
    server_deadline = state.state_details.pause_timeout
    assert server_deadline is not None

    assert main(["pending", "--output", "json", "--api-url", prefect_harness]) == 0

    out, err = capsys.readouterr()
    assert err == ""
    listed = {run["id"]: run for run in json.loads(out)}
    run = listed[str(run_id)]
    assert run["flow_name"] == "approval-cli-test-done"
    # The server's deadline is SERVER_GRACE_SECONDS past the reviewer's; JSON keeps ms.
    reviewer_deadline = server_deadline - timedelta(seconds=SERVER_GRACE_SECONDS)
    shown = datetime.fromisoformat(run["times_out_at"])
    assert abs(shown - reviewer_deadline) < timedelta(milliseconds=1)
    assert datetime.fromisoformat(run["paused_since"]) == state.timestamp.replace(
        microsecond=state.timestamp.microsecond // 1000 * 1000
    )


def test_a_pause_without_a_form_is_counted_but_cannot_be_approved(
    prefect_harness: str,
    forced_pause: Callable[..., uuid.UUID],
    capsys: pytest.CaptureFixture[str],
) -> None:
    run_id = forced_pause(with_form=False)

    assert main(["pending", "--api-url", prefect_harness]) == 0
    out = capsys.readouterr().out
    assert str(run_id) not in out
    assert "other paused run(s) wait for no input" in out

    assert main(["approve", str(run_id), "--reviewer", "alice", "--api-url", prefect_harness]) == 1
    assert "not waiting for approval" in capsys.readouterr().err
    with connect(prefect_harness) as approvals:
        state = approvals.read_flow_run(str(run_id)).state
    assert state is not None
    assert state.is_paused()


def test_resume_waits_for_the_form_schema_then_gives_up(
    prefect_harness: str, forced_pause: Callable[..., uuid.UUID]
) -> None:
    run_id = forced_pause(with_form=True)

    with connect(prefect_harness) as approvals:
        started = time.monotonic()
        with pytest.raises(OrchestratorError, match=r"not saved its approval form after 0\.6 s"):
            approvals.resume(
                str(run_id), {"decision": "approve", "reviewer": "alice"}, schema_timeout=0.6
            )
        waited = time.monotonic() - started
        state = approvals.read_flow_run(str(run_id)).state

    assert waited >= 0.6
    assert state is not None
    assert state.is_paused()


def test_unknown_and_malformed_ids_are_not_found(prefect_harness: str) -> None:
    with connect(prefect_harness) as approvals:
        with pytest.raises(FlowRunNotFoundError, match="modelferry pending"):
            approvals.resume(str(uuid.uuid4()), {})
        with pytest.raises(FlowRunNotFoundError, match=r"'not-a-uuid'.*a UUID"):
            approvals.resume("not-a-uuid", {})


def test_a_completed_run_is_not_paused(prefect_harness: str) -> None:
    state = finishes_at_once(return_state=True)

    with (
        connect(prefect_harness) as approvals,
        pytest.raises(FlowRunNotPausedError, match="its state is Completed"),
    ):
        approvals.resume(str(state.state_details.flow_run_id), {})


def test_url_without_api_root_is_explained_not_reported_as_missing_run(
    prefect_harness: str, capsys: pytest.CaptureFixture[str]
) -> None:
    root = prefect_harness.removesuffix("/api")

    assert main(["approve", str(uuid.uuid4()), "--reviewer", "alice", "--api-url", root]) == 1

    err = capsys.readouterr().err
    assert "ending in /api" in err
    assert "not found" not in err


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_unreachable_server_is_named_without_credentials(
    capsys: pytest.CaptureFixture[str],
) -> None:
    port = _closed_port()

    code = main(["pending", "--api-url", f"http://reviewer:hunter2@127.0.0.1:{port}/api"])

    err = capsys.readouterr().err
    assert code == 1
    assert f"cannot reach the Prefect API at http://127.0.0.1:{port}/api" in err
    assert "prefect server start" in err
    assert "hunter2" not in err
    assert len(err.splitlines()) == 1
