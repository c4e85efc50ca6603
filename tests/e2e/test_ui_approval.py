"""A paused `train-and-register/ci` run is approved, or rejected, in the real Prefect UI.

Production-shaped: the Prefect server runs on PostgreSQL, `prefect deploy --all` applied
prefect.yaml, a process worker picks the run up, and the run is started the way Azure
DevOps starts it, `prefect deployment run 'train-and-register/ci' --watch --watch-timeout N`.
The test waits until the run is paused for an `ApprovalInput`; a reviewer opens it in
Chromium, clicks Resume, reads the gate report, fills in the form, is refused when
submitting without choosing approve or reject, then chooses and submits. The watching
CLI must exit 0, the run must be Completed, and MLflow must show the reviewer's decision:
the champion alias moved on approval, and nothing moved on rejection. Screenshots of the
filled-in form are kept under `.modelferry/test-artifacts/`.
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
    from tests.e2e.conftest import PrefectServer, Worker

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO_ROOT / ".modelferry" / "test-artifacts"
FLOW_NAME = "train-and-register"
DEPLOYMENT = "train-and-register/ci"
MODEL_NAME = "breast-cancer-classifier"
REVIEWER = "e2e-reviewer"
#: Worker start-up of the run, loading data, training, registering (~20 s here).
PAUSE_TIMEOUT = 150.0
#: The paused run checks every few seconds (`approval_poll_seconds`) whether it was resumed.
FINISH_TIMEOUT = 90.0
UI_TIMEOUT_MS = 20_000


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
    api: httpx.Client,
    known: set[str],
    flow: subprocess.Popen[bytes],
    log_path: Path,
    worker: Worker,
) -> str:
    """The id of the new `train-and-register` run once it waits for the approval form."""
    deadline = time.monotonic() + PAUSE_TIMEOUT
    last_state = "no flow run yet"
    while time.monotonic() < deadline:
        if flow.poll() is not None:
            pytest.fail(
                f"`prefect deployment run` exited with code {flow.returncode} before the run "
                f"paused:\n{log_path.read_text(errors='replace')}\n--- worker ---\n{worker.log()}"
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
        f"{log_path.read_text(errors='replace')}\n--- worker ---\n{worker.log()}"
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


def _check_report(dialog: Locator) -> None:
    """The gate report in the form's description: a narrow table that fits, plain text."""
    # The form's description is the gate report, rendered as Markdown (heading + table).
    expect(dialog.get_by_role("heading", name=re.compile("challenger vs champion"))).to_be_visible(
        timeout=UI_TIMEOUT_MS
    )
    headers = dialog.get_by_role("columnheader")
    expect(headers).to_have_text(["metric", "challenger", "champion", "gate"])
    expect(dialog.get_by_role("cell", name="roc_auc", exact=True)).to_be_visible()
    expect(dialog.get_by_role("cell", name="not gated").first).to_be_visible()
    table = dialog.get_by_role("table")
    table_right = table.evaluate("t => t.getBoundingClientRect().right")
    dialog_right = dialog.evaluate("d => d.getBoundingClientRect().right")
    assert table_right <= dialog_right, f"table ends at {table_right}, dialog at {dialog_right}"
    text = dialog.inner_text()
    # Each metric's bars are a line below the table (no champion here: thresholds only).
    assert "roc_auc (higher is better); needs at least " in text, text
    assert "-0.0000" not in text, text
    assert [char for char in text if ord(char) >= 0x2600] == [], text
    # A SQLite store: the command that opens it, as code, path and all.
    command = dialog.locator("code").filter(has_text="mlflow ui --backend-store-uri sqlite:///")
    expect(command).to_contain_text("mlflow.db (then open #/experiments/")


def _choose(dialog: Locator, decision: str) -> None:
    """Pick `decision` in the Decision select: open its list of options, click one."""
    control = _form_field(dialog, "Decision").locator(".p-select-button__control")
    # In headless Chromium a click on this select does not open its list; ArrowDown on
    # the focused select does, as it does for a keyboard user.
    control.focus()
    control.press("ArrowDown")
    dialog.page.get_by_role("option", name=decision, exact=True).click()
    expect(control).to_have_text(decision)


def _answer_in_ui(
    page: Page,
    api: httpx.Client,
    run_id: str,
    run_url: str,
    approve: bool,
    comment: str,
    shot: Path,
) -> None:
    page.goto(run_url)
    resume = page.get_by_role("button", name="Resume", exact=True)
    expect(resume).to_be_visible(timeout=UI_TIMEOUT_MS)
    resume.click()

    dialog = page.get_by_role("dialog").filter(has_text="Resume Flow Run")
    expect(dialog).to_be_visible(timeout=UI_TIMEOUT_MS)
    _check_report(dialog)

    # The decision is required and has no default: nothing is marked "(Optional)" and
    # submitting before choosing is refused by the form, the run staying paused.
    expect(dialog.get_by_text("Decision", exact=True)).to_be_visible()
    expect(dialog.get_by_text("Decision (Optional)")).to_have_count(0)
    expect(dialog.get_by_text("Approve (Optional)")).to_have_count(0)
    _form_field(dialog, "Reviewer").get_by_role("textbox").fill(REVIEWER)
    _form_field(dialog, "Comment (Optional)").get_by_role("textbox").fill(comment)
    dialog.get_by_role("button", name="Submit", exact=True).click()
    expect(_form_field(dialog, "Decision")).to_contain_text(
        "'decision' is a required property", timeout=UI_TIMEOUT_MS
    )
    expect(dialog).to_be_visible()
    assert api.get(f"/flow_runs/{run_id}").json()["state"]["type"] == "PAUSED"

    _choose(dialog, "approve" if approve else "reject")
    shot.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shot), full_page=True)

    dialog.get_by_role("button", name="Submit", exact=True).click()
    expect(dialog).to_be_hidden(timeout=UI_TIMEOUT_MS)


def _run_deployment_and_answer(
    worker: Worker,
    server: PrefectServer,
    page: Page,
    tmp_path: Path,
    *,
    approve: bool,
    comment: str,
) -> tuple[str, str, dict[str, Any]]:
    """Start the CI deployment as a pipeline does, answer the form; (run id, output, state)."""
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    log_path = tmp_path / "deployment-run.log"
    prefect = Path(sys.executable).with_name("prefect")
    command = [
        str(prefect),
        "deployment",
        "run",
        DEPLOYMENT,
        "-p",
        "approval=manual",
        "-p",
        f"targets={json.dumps({'tracking_uri': tracking_uri})}",
        "-p",
        "approval_poll_seconds=2",
        "--watch",
        "--watch-timeout",
        str(int(PAUSE_TIMEOUT + FINISH_TIMEOUT)),
    ]
    with httpx.Client(base_url=server.api_url, timeout=10.0) as api:
        known = _flow_run_ids(api)
        # Output goes to a file: a pipe nobody reads while the browser works could fill up.
        with log_path.open("wb") as log:
            watch = subprocess.Popen(
                command,
                cwd=REPO_ROOT,
                env=worker.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            run_id = _wait_until_paused(api, known, watch, log_path, worker)
            shot = ARTIFACTS / f"ui-{'approve' if approve else 'reject'}-form.png"
            with _diagnose(page, tmp_path):
                run_url = f"{server.ui_url}/runs/flow-run/{run_id}"
                _answer_in_ui(page, api, run_id, run_url, approve, comment, shot)
            try:
                code = watch.wait(timeout=FINISH_TIMEOUT)
            except subprocess.TimeoutExpired:
                pytest.fail(
                    f"the run did not finish within {FINISH_TIMEOUT:g} s of the answer:\n"
                    f"{log_path.read_text(errors='replace')}\n--- worker ---\n{worker.log()}"
                )
            final_state = api.get(f"/flow_runs/{run_id}").json()["state"]
        finally:
            _stop(watch)
    output = log_path.read_text(errors="replace")
    assert code == 0, f"{output}\n--- worker ---\n{worker.log()}"
    assert final_state["type"] == "COMPLETED", final_state
    return run_id, tracking_uri, final_state


def _client(tracking_uri: str) -> Any:
    from mlflow import MlflowClient

    # Both URIs explicitly: MLflow's default registry URI is process-wide state that an
    # earlier test in this session may have pointed elsewhere.
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def test_paused_deployment_run_is_approved_from_the_ui(
    prefect_server: PrefectServer, worker: Worker, page: Page, tmp_path: Path
) -> None:
    comment = "approved from the Prefect UI by the e2e test"
    run_id, tracking_uri, state = _run_deployment_and_answer(
        worker, prefect_server, page, tmp_path, approve=True, comment=comment
    )
    match = re.search(rf"{MODEL_NAME} v(\d+) approved by reviewer {REVIEWER}\b", state["message"])
    assert match, state

    champion = _client(tracking_uri).get_model_version_by_alias(MODEL_NAME, "champion")
    assert str(champion.version) == match.group(1)
    assert champion.tags["decision.status"] == "approved"
    assert champion.tags["decision.decided_by"] == REVIEWER
    assert champion.tags["decision.comment"] == comment
    assert champion.tags["decision.mode"] == "manual"
    assert champion.tags["decision.flow_run_id"] == run_id
    assert (ARTIFACTS / "ui-approve-form.png").stat().st_size > 10_000


def test_paused_deployment_run_is_rejected_from_the_ui(
    prefect_server: PrefectServer, worker: Worker, page: Page, tmp_path: Path
) -> None:
    comment = "rejected from the Prefect UI by the e2e test"
    run_id, tracking_uri, state = _run_deployment_and_answer(
        worker, prefect_server, page, tmp_path, approve=False, comment=comment
    )
    assert f"rejected by reviewer {REVIEWER}" in state["message"], state

    client = _client(tracking_uri)
    (version,) = client.search_model_versions(f"name='{MODEL_NAME}'")
    assert version.tags["decision.status"] == "rejected"
    assert version.tags["decision.decided_by"] == REVIEWER
    assert version.tags["decision.comment"] == comment
    assert version.tags["decision.flow_run_id"] == run_id
    assert "champion" not in version.aliases, "a rejected model must not become champion"
    assert (ARTIFACTS / "ui-reject-form.png").stat().st_size > 10_000
