"""Helpers for flow tests: configs in tmp_path, a reviewer who resumes paused runs."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from prefect.settings import PREFECT_API_URL

from modelferry import cli
from modelferry_prefect.approvals import connect

REPO = Path(__file__).parents[2]


def write_config(tmp_path: Path, name: str = "model.json", **changes: Any) -> Path:
    """The repository's model config with top-level sections replaced, in tmp_path."""
    config = json.loads((REPO / "config" / "model_config.json").read_text(encoding="utf-8"))
    config.update(changes)
    path = tmp_path / name
    path.write_text(json.dumps(config), encoding="utf-8")
    return path


# What Prefect's own client retries: the server answers 503 when its database is busy
# (SQLite under a loaded CI machine), 429 and 502 in front of a proxy.
_RETRIED_STATUS = frozenset({429, 502, 503})


def api_post(path: str, body: dict[str, Any], attempts: int = 6) -> Any:
    """POST to the test server's REST API, retrying busy answers as Prefect's client does."""
    url = f"{PREFECT_API_URL.value()}{path}"
    for attempt in range(1, attempts + 1):
        response = httpx.post(url, json=body, timeout=10)
        if response.status_code not in _RETRIED_STATUS or attempt == attempts:
            break
        time.sleep(min(0.5 * 2 ** (attempt - 1), 5.0))
    response.raise_for_status()
    return response.json()


def api_filter(path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    """POST a /filter query to the test server's REST API."""
    result: list[dict[str, Any]] = api_post(path, {"offset": 0, "limit": 200, **body})
    return result


def reviewer_thread(run_name: str, answer: dict[str, Any]) -> tuple[threading.Thread, list[str]]:
    """A reviewer who waits for the paused run named `run_name` and answers with
    `modelferry approve`, as a script or CI job would.

    Returns the thread and a list that receives any error the reviewer met.
    """
    errors: list[str] = []

    def review() -> None:
        try:
            with connect(str(PREFECT_API_URL.value())) as approvals:
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline:
                    runs = [r for r in approvals.list_paused_runs() if r.run_name == run_name]
                    if runs and runs[0].waits_for_input:
                        argv = [
                            "approve", runs[0].id,
                            "--reviewer", answer["reviewer"],
                            "--comment", answer["comment"],
                            "--api-url", str(PREFECT_API_URL.value()),
                        ]  # fmt: skip
                        if not answer["approve"]:
                            argv.append("--reject")
                        if cli.main(argv) != 0:
                            errors.append(f"modelferry {' '.join(argv)} failed")
                        return
                    time.sleep(0.3)
                errors.append(f"no paused run named {run_name!r} within 120 s")
        except Exception as exc:  # reported to the test, which fails with it
            errors.append(repr(exc))

    thread = threading.Thread(target=review, daemon=True)
    thread.start()
    return thread, errors
