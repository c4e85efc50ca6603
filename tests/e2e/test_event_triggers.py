"""The approval event starts the on-approval deployments through their triggers.

On the production-shaped server (PostgreSQL, `prefect deploy --all`), the trigger of
`package-and-deliver/on-approval` is registered as an automation, off as prefect.yaml
declares it. Switched on, a `modelferry.model.approved` event shaped as the approval emits
it must create a run of that deployment with the model name and version taken from the
event. The run is cancelled afterwards: starting it is what is under test here.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from flows.train_and_register import MODEL_APPROVED_EVENT

if TYPE_CHECKING:
    from tests.e2e.conftest import PrefectServer, Worker

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

DEPLOYMENT = "package-and-deliver/on-approval"


def _approval_event(model: str, version: str) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "occurred": datetime.now(UTC).isoformat(),
        "event": MODEL_APPROVED_EVENT,
        "resource": {
            "prefect.resource.id": f"modelferry.model.{model}.{version}",
            "prefect.resource.name": f"{model} v{version}",
            "modelferry.model.name": model,
            "modelferry.model.version": version,
        },
        "payload": {"model_name": model, "model_version": version, "decided_by": "e2e"},
        "related": [],
    }


def test_an_approval_event_starts_the_edge_stage(
    prefect_server: PrefectServer, worker: Worker
) -> None:
    with httpx.Client(base_url=prefect_server.api_url, timeout=10.0) as api:
        deployment = api.get(f"/deployments/name/{DEPLOYMENT}").json()
        automations = api.get(
            f"/automations/related-to/prefect.deployment.{deployment['id']}"
        ).json()
        assert len(automations) == 1, automations
        (automation,) = automations
        assert automation["enabled"] is False, "prefect.yaml declares the trigger off"
        assert api.patch(f"/automations/{automation['id']}", json={"enabled": True}).is_success
        try:
            time.sleep(2)  # the triggers service reloads automations as they change
            model = f"e2e-model-{uuid.uuid4().hex[:6]}"
            posted = api.post("/events", json=[_approval_event(model, "7")])
            assert posted.status_code == 204, posted.text
            run = _wait_for_run(api, deployment["id"])
            assert run["parameters"]["model_name"] == model
            assert run["parameters"]["model_version"] == "7"
            assert run["parameters"]["config_path"] == "config/model_config.json"
            api.post(
                f"/flow_runs/{run['id']}/set_state",
                json={"state": {"type": "CANCELLED", "name": "Cancelled"}, "force": True},
            )
        finally:
            api.patch(f"/automations/{automation['id']}", json={"enabled": False})


def _wait_for_run(api: httpx.Client, deployment_id: str, timeout: float = 90.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = api.post(
            "/flow_runs/filter",
            json={"deployments": {"id": {"any_": [deployment_id]}}, "limit": 10},
        ).json()
        if runs:
            return runs[0]
        time.sleep(1.0)
    pytest.fail(f"no run of {DEPLOYMENT} within {timeout:g} s of the approval event")
