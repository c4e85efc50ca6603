"""prefect.yaml and the serve script describe deployments that load and validate."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect.client.schemas.schedules import CronSchedule
from prefect.flows import load_flow_from_entrypoint

REPO = Path(__file__).parents[2]


def deployments() -> dict[str, dict[str, Any]]:
    """prefect.yaml's deployments by full name, `flow-name/deployment-name`."""
    spec = yaml.safe_load((REPO / "prefect.yaml").read_text(encoding="utf-8"))
    found = {}
    for deployment in spec["deployments"]:
        flow = deployment["entrypoint"].rsplit(":", 1)[1].replace("_", "-")
        found[f"{flow}/{deployment['name']}"] = deployment
    assert len(found) == len(spec["deployments"]), "two deployments share a full name"
    return found


EXPECTED = {
    "retrain-and-deliver/nightly": "flows/retrain_and_deliver.py:retrain_and_deliver",
    "train-and-register/ci": "flows/train_and_register.py:train_and_register",
    "package-model/ci": "flows/package_model.py:package_model",
    "batch-score/daily": "flows/batch_score.py:batch_score",
    "deploy-online-endpoint/manual": "flows/deploy_online_endpoint.py:deploy_online_endpoint",
    "deploy-online-endpoint/on-approval": "flows/deploy_online_endpoint.py:deploy_online_endpoint",
    "deliver-package/standalone-delivery": "flows/deliver_package.py:deliver_package",
    "package-and-deliver/on-approval": "flows/package_and_deliver.py:package_and_deliver",
}


def test_expected_deployments_exist() -> None:
    assert {name: d["entrypoint"] for name, d in deployments().items()} == EXPECTED


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_entrypoints_load_and_parameters_validate(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Scheduled deployments carry every parameter they need; the others only known ones
    (the rest is given at run time, by hand, by a pipeline or by a trigger)."""
    monkeypatch.chdir(REPO)
    deployment = deployments()[name]
    flow = load_flow_from_entrypoint(deployment["entrypoint"])
    parameters = deployment.get("parameters") or {}
    accepted = set(flow.parameters.properties)
    assert set(parameters) <= accepted, sorted(set(parameters) - accepted)
    supplied = set(parameters) | {
        key for trigger in deployment.get("triggers") or [] for key in trigger["parameters"]
    }
    if deployment.get("schedules") or deployment.get("triggers"):
        missing = set(flow.parameters.required or []) - supplied
        assert not missing, f"{name} runs unattended but lacks {sorted(missing)}"
    if deployment.get("schedules"):
        flow.validate_parameters(parameters)
    config = parameters.get("config_path")
    assert config is None or Path(REPO / config).is_file()


def test_nightly_schedule_is_two_am_with_timezone() -> None:
    (schedule,) = deployments()["retrain-and-deliver/nightly"]["schedules"]
    cron = CronSchedule(cron=schedule["cron"], timezone=schedule["timezone"])
    assert cron.cron == "0 2 * * *"
    assert cron.timezone == "Europe/Amsterdam"


def test_serve_script_builds_every_prefect_yaml_deployment(monkeypatch: pytest.MonkeyPatch) -> None:
    """prefect.yaml is the one source of truth: serve builds exactly what it declares."""
    from deployments import serve

    monkeypatch.chdir(REPO)
    declared = deployments()
    built = {f"{d.flow_name}/{d.name}": d for d in serve.build_deployments()}
    assert set(built) == set(declared)
    for name, spec in declared.items():
        deployment = built[name]
        assert deployment.entrypoint is not None
        assert deployment.parameters == (spec.get("parameters") or {})
        assert set(deployment.tags) == set(spec.get("tags") or [])
        crons = [s.schedule.cron for s in deployment.schedules or []]  # type: ignore[union-attr]
        assert crons == [s["cron"] for s in spec.get("schedules") or [] if s.get("active", True)]
        assert [t.enabled for t in deployment.triggers] == [  # type: ignore[union-attr]
            t.get("enabled", True) for t in spec.get("triggers") or []
        ]


def test_nightly_runs_never_overlap() -> None:
    limit = deployments()["retrain-and-deliver/nightly"]["concurrency_limit"]
    assert limit == {"limit": 1, "collision_strategy": "CANCEL_NEW"}


@pytest.mark.parametrize(
    "name", ["deploy-online-endpoint/on-approval", "package-and-deliver/on-approval"]
)
def test_approval_triggers_read_what_the_approval_event_carries(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The triggers' templates name resource labels that `announce_approval` really emits."""
    from prefect.events import DeploymentEventTrigger

    import flows.train_and_register as train
    from modelferry.approval import ApprovalDecision

    emitted: list[dict[str, Any]] = []
    monkeypatch.setattr(train, "emit_event", lambda **event: emitted.append(event))
    decision = ApprovalDecision(
        status="approved", mode="auto", decided_by="gate", gate_passed=True, comment=""
    )
    train.announce_approval("bcc", "7", decision, "http://mlflow/run")
    (event,) = emitted

    (spec,) = deployments()[name]["triggers"]
    trigger = DeploymentEventTrigger(**spec)
    assert trigger.expect == {event["event"]}
    resource = event["resource"]
    rendered = {
        key: re.fullmatch(r"\{\{ event\.resource\['([^']+)'\] \}\}", template)
        for key, template in (trigger.parameters or {}).items()
    }
    assert all(rendered.values()), trigger.parameters
    values = {key: resource[found.group(1)] for key, found in rendered.items() if found}
    assert values == {"model_name": "bcc", "model_version": "7"}
    prefix = str(spec["match"]["prefect.resource.id"]).rstrip("*")
    assert resource["prefect.resource.id"].startswith(prefix)
