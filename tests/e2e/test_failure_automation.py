"""The server announces failed, crashed and cancelled deployment runs through an automation.

Production-shaped: `prefect server start` on PostgreSQL with its event services, the
deployments of prefect.yaml applied, a process worker. `python -m deployments.failure_notices`
sets the automation up with the webhook the approval notices use. Then a run that fails,
a run whose process is killed with SIGKILL (no hook in it can run) and a run cancelled
before it started must each post exactly one `run.failed` notice, shaped as
`modelferry.notify` shapes them, and the webhook's secret path never leaves the block.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import psutil
import pytest

from deployments.failure_notices import AUTOMATION_NAME, WEBHOOK_BLOCK_NAME
from tests.webhook_receiver import WebhookReceiver, webhook_receiver

if TYPE_CHECKING:
    from tests.e2e.conftest import PrefectServer, Worker

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]

REPO_ROOT = Path(__file__).resolve().parents[2]
NOTICE_TIMEOUT = 90.0


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    with webhook_receiver() as receiver:
        yield receiver


@pytest.fixture(scope="module")
def notices_set_up(worker: Worker, receiver: WebhookReceiver) -> str:
    """Runs the set-up command twice (the second updates in place); its first output."""
    env = worker.env | {"MODELFERRY_WEBHOOK_URL": receiver.url}
    env.pop("MODELFERRY_WEBHOOK_BLOCK", None)
    outputs = []
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, "-m", "deployments.failure_notices"],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        outputs.append(done.stdout + done.stderr)
    assert outputs[0].startswith("Created the automation"), outputs[0]
    assert outputs[1].startswith("Updated the automation"), outputs[1]
    for output in outputs:
        assert "T0KEN" not in output
        assert "127.0.0.1" in output
    time.sleep(3)  # the triggers service loads automations as they change
    return outputs[0]


def _deployment_id(api: httpx.Client, name: str) -> str:
    response = api.get(f"/deployments/name/{name}")
    response.raise_for_status()
    return str(response.json()["id"])


def _create_run(api: httpx.Client, deployment: str, **body: Any) -> str:
    response = api.post(
        f"/deployments/{_deployment_id(api, deployment)}/create_flow_run", json=body
    )
    response.raise_for_status()
    return str(response.json()["id"])


def _state(api: httpx.Client, flow_run_id: str) -> str:
    response = api.get(f"/flow_runs/{flow_run_id}")
    response.raise_for_status()
    return str(response.json()["state"]["type"])


def _notices_for(receiver: WebhookReceiver, flow_run_id: str) -> list[dict[str, Any]]:
    return [
        body
        for body in receiver.received
        if (body.get("details") or {}).get("flow_run_id") == flow_run_id
    ]


def _one_notice(receiver: WebhookReceiver, flow_run_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + NOTICE_TIMEOUT
    while time.monotonic() < deadline and not _notices_for(receiver, flow_run_id):
        time.sleep(0.5)
    time.sleep(3)  # a second notice for the same run would come right after the first
    notices = _notices_for(receiver, flow_run_id)
    assert len(notices) == 1, (flow_run_id, receiver.received)
    return notices[0]


def _engine_process(flow_run_id: str, deadline: float) -> psutil.Process:
    """The process the worker started for this flow run (it carries the run's id)."""
    while time.monotonic() < deadline:
        for process in psutil.process_iter(["pid"]):
            try:
                if process.environ().get("PREFECT__FLOW_RUN_ID") == flow_run_id:
                    return process
            except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
                continue
        time.sleep(0.5)
    raise AssertionError(f"no process runs flow run {flow_run_id}")


def test_a_failed_run_posts_one_notice_with_the_reason_and_the_link(
    prefect_server: PrefectServer, receiver: WebhookReceiver, notices_set_up: str
) -> None:
    missing = REPO_ROOT / ".modelferry" / "no-such-input.parquet"
    with httpx.Client(base_url=prefect_server.api_url, timeout=10.0) as api:
        run_id = _create_run(api, "batch-score/daily", parameters={"input": str(missing)})
        notice = _one_notice(receiver, run_id)
        assert _state(api, run_id) == "FAILED"

    assert notice["event"] == "run.failed"
    assert notice["details"]["flow"] == "batch-score"
    assert notice["details"]["deployment"] == "daily"
    assert notice["details"]["state"] == "Failed"
    assert notice["title"].startswith("batch-score run ")
    assert notice["title"].endswith(" ended FAILED")
    assert "no-such-input.parquet" in notice["text"]
    assert notice["flow_run_url"].endswith(f"/runs/flow-run/{run_id}")
    assert notice["flow_run_url"] in notice["text"]
    datetime.fromisoformat(notice["sent_at"])
    assert receiver.paths[-1] == "/hooks/T0KEN-secret-part"


def test_a_run_killed_with_sigkill_posts_a_crashed_notice(
    prefect_server: PrefectServer, worker: Worker, receiver: WebhookReceiver, notices_set_up: str
) -> None:
    with httpx.Client(base_url=prefect_server.api_url, timeout=10.0) as api:
        run_id = _create_run(api, "train-and-register/ci")
        process = _engine_process(run_id, time.monotonic() + 120)
        os.kill(process.pid, signal.SIGKILL)
        notice = _one_notice(receiver, run_id)
        assert _state(api, run_id) == "CRASHED", worker.log()[-3000:]

    assert notice["details"]["flow"] == "train-and-register"
    assert notice["details"]["state"] == "Crashed"
    assert notice["title"].endswith(" ended CRASHED")
    assert notice["text"].strip(), notice


def test_a_cancelled_run_posts_a_notice(
    prefect_server: PrefectServer, receiver: WebhookReceiver, notices_set_up: str
) -> None:
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    with httpx.Client(base_url=prefect_server.api_url, timeout=10.0) as api:
        run_id = _create_run(
            api,
            "train-and-register/ci",
            state={"type": "SCHEDULED", "state_details": {"scheduled_time": later}},
        )
        cancelled = api.post(
            f"/flow_runs/{run_id}/set_state",
            json={"state": {"type": "CANCELLED", "message": "cancelled by the e2e test"}},
        )
        cancelled.raise_for_status()
        notice = _one_notice(receiver, run_id)

    assert notice["details"]["state"] == "Cancelled"
    assert notice["title"].endswith(" ended CANCELLED")
    assert notice["text"].startswith("cancelled by the e2e test")


def test_the_automation_and_its_block_are_saved_once(
    prefect_server: PrefectServer, notices_set_up: str
) -> None:
    with httpx.Client(base_url=prefect_server.api_url, timeout=10.0) as api:
        automations = api.post("/automations/filter", json={}).json()
        named = [a for a in automations if a["name"] == AUTOMATION_NAME]
        assert len(named) == 1, automations
        (action,) = named[0]["actions"]
        assert action["type"] == "call-webhook"
        block = api.get(f"/block_documents/{action['block_document_id']}").json()
        assert block["name"] == WEBHOOK_BLOCK_NAME
        assert "T0KEN" not in str(block), "the API shows the webhook URL obfuscated"
    assert "T0KEN" not in notices_set_up
