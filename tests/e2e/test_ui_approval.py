"""A paused `train-and-register` run is approved from the real Prefect UI in a real browser.

The flow runs as its own process against a real `prefect server start`, exactly as a
developer runs it by hand; the test waits until it is paused for an `ApprovalInput`, then
a reviewer opens the run in Chromium, clicks Resume, fills in the form and submits. The run
must finish, and MLflow must show the new version as champion with the reviewer's decision.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from playwright.sync_api import Locator, Page, expect

if TYPE_CHECKING:
    from tests.e2e.conftest import PrefectServer

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

REPO_ROOT = Path(__file__).resolve().parents[2]
FLOW_NAME = "train-and-register"
MODEL_NAME = "breast-cancer-classifier"
REVIEWER = "e2e-reviewer"
COMMENT = "approved from the Prefect UI by the e2e test"
#: Loading data, training, registering in a fresh MLflow store (~15 s here).
PAUSE_TIMEOUT = 120.0
#: The paused run checks every 10 s (`approval_poll_seconds`) whether it was resumed.
FINISH_TIMEOUT = 90.0
UI_TIMEOUT_MS = 20_000


def _write_config(tmp_path: Path) -> Path:
    config = json.loads((REPO_ROOT / "config" / "model_config.json").read_text())
    config["approval"] = {"mode": "manual", "timeout_seconds": 300}
    path = tmp_path / "model_config.json"
    path.write_text(json.dumps(config, indent=2))
    return path


def _flow_run_ids(api: httpx.Client) -> set[str]:
    response = api.post(
        "/flow_runs/filter",
        json={"flows": {"name": {"any_": [FLOW_NAME]}}, "limit": 200},
    )
    response.raise_for_status()
    return {run["id"] for run in response.json()}


def _paused_for_input(api: httpx.Client, run: dict[str, Any]) -> bool:
    """Paused, and the form's schema saved (else the UI has no form and a resume is refused)."""
    state = run.get("state") or {}
    if state.get("type") != "PAUSED":
        return False
    keyset = (state.get("state_details") or {}).get("run_input_keyset") or {}
    schema_key = keyset.get("schema")
    if not schema_key:
        return False
    return api.get(f"/flow_runs/{run['id']}/input/{schema_key}").status_code == 200


def _wait_until_paused(
    api: httpx.Client, known: set[str], flow: subprocess.Popen[bytes], log_path: Path
) -> str:
    """The id of the new `train-and-register` run once it waits for the approval form."""
    deadline = time.monotonic() + PAUSE_TIMEOUT
    last_state = "no flow run yet"
    while time.monotonic() < deadline:
        if flow.poll() is not None:
            pytest.fail(
                f"the flow exited with code {flow.returncode} before pausing:\n"
                f"{log_path.read_text(errors='replace')}"
            )
        response = api.post(
            "/flow_runs/filter",
            json={
                "flows": {"name": {"any_": [FLOW_NAME]}},
                "sort": "EXPECTED_START_TIME_DESC",
                "limit": 200,
            },
        )
        response.raise_for_status()
        runs = [run for run in response.json() if run["id"] not in known]
        if runs:
            run = runs[0]
            last_state = f"{run['id']}: {(run.get('state') or {}).get('type')}"
            if _paused_for_input(api, run):
                return str(run["id"])
        time.sleep(1.0)
    pytest.fail(
        f"no {FLOW_NAME} run paused for input within {PAUSE_TIMEOUT:g} s ({last_state}):\n"
        f"{log_path.read_text(errors='replace')}"
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    """End a flow process left running by a failed test (SIGTERM, then SIGKILL)."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


@contextmanager
def _diagnose(page: Page, tmp_path: Path) -> Iterator[None]:
    """On failure: save a screenshot and print what the page shows."""
    try:
        yield
    except BaseException:
        shot = tmp_path / "failure.png"
        try:
            page.screenshot(path=str(shot), full_page=True)
            text = page.locator("body").inner_text(timeout=5_000)
        except Exception as exc:  # the page itself may be gone
            text = f"(could not read the page: {exc!r})"
        print(f"--- UI at {page.url} (screenshot {shot}) ---\n{text}")
        raise


def _form_field(dialog: Locator, label: str) -> Locator:
    """One property of the `RunInput` form, found by its visible label."""
    return dialog.locator(".schema-form-property").filter(
        has=dialog.page.get_by_text(label, exact=True)
    )


def _approve_in_ui(page: Page, run_url: str, tmp_path: Path) -> None:
    page.goto(run_url)
    resume = page.get_by_role("button", name="Resume", exact=True)
    expect(resume).to_be_visible(timeout=UI_TIMEOUT_MS)
    resume.click()

    dialog = page.get_by_role("dialog").filter(has_text="Resume Flow Run")
    expect(dialog).to_be_visible(timeout=UI_TIMEOUT_MS)
    # The form's description is the gate report, rendered as Markdown (heading + table).
    expect(dialog.get_by_role("heading", name=re.compile("challenger vs champion"))).to_be_visible(
        timeout=UI_TIMEOUT_MS
    )
    expect(dialog.get_by_role("columnheader", name="challenger")).to_be_visible()
    expect(dialog.get_by_role("cell", name="roc_auc", exact=True)).to_be_visible()

    # The boolean is a toggle: a <label role=switch> around a hidden checkbox.
    approve = _form_field(dialog, "Approve (Optional)").get_by_role("switch")
    expect(approve).not_to_be_checked()
    approve.click()
    expect(approve).to_be_checked()
    _form_field(dialog, "Reviewer").get_by_role("textbox").fill(REVIEWER)
    _form_field(dialog, "Comment (Optional)").get_by_role("textbox").fill(COMMENT)
    page.screenshot(path=str(tmp_path / "resume-dialog.png"), full_page=True)

    dialog.get_by_role("button", name="Submit", exact=True).click()
    expect(dialog).to_be_hidden(timeout=UI_TIMEOUT_MS)


def test_paused_run_is_approved_from_the_ui(
    prefect_server: PrefectServer, page: Page, tmp_path: Path
) -> None:
    config_path = _write_config(tmp_path)
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    log_path = tmp_path / "flow.log"
    command = [
        sys.executable,
        "-m",
        "flows.train_and_register",
        "--config",
        str(config_path),
        "--tracking-uri",
        tracking_uri,
    ]
    env = prefect_server.client_env(tmp_path / "prefect-client-home")

    with httpx.Client(base_url=prefect_server.api_url, timeout=10.0) as api:
        known = _flow_run_ids(api)
        # Output goes to a file: a pipe nobody reads while the browser works could fill up
        # and block the flow.
        with log_path.open("wb") as log:
            flow = subprocess.Popen(
                command,
                cwd=REPO_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            run_id = _wait_until_paused(api, known, flow, log_path)
            with _diagnose(page, tmp_path):
                _approve_in_ui(page, f"{prefect_server.ui_url}/runs/flow-run/{run_id}", tmp_path)
            try:
                code = flow.wait(timeout=FINISH_TIMEOUT)
            except subprocess.TimeoutExpired:
                pytest.fail(
                    f"the flow did not finish within {FINISH_TIMEOUT:g} s of the approval:\n"
                    f"{log_path.read_text(errors='replace')}"
                )
            final_state = api.get(f"/flow_runs/{run_id}").json()["state"]
        finally:
            _stop(flow)

    output = log_path.read_text(errors="replace")
    assert code == 0, output
    assert final_state["type"] == "COMPLETED", final_state
    match = re.search(rf"{MODEL_NAME} v(\d+) approved by reviewer {REVIEWER}\b", output)
    assert match, output

    from mlflow import MlflowClient

    # Both URIs explicitly: MLflow's default registry URI is process-wide state that an
    # earlier test in this session may have pointed elsewhere.
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    champion = client.get_model_version_by_alias(MODEL_NAME, "champion")
    assert str(champion.version) == match.group(1)
    assert champion.tags["decision.status"] == "approved"
    assert champion.tags["decision.decided_by"] == REVIEWER
    assert champion.tags["decision.comment"] == COMMENT
    assert champion.tags["decision.mode"] == "manual"
    assert champion.tags["decision.flow_run_id"] == run_id
