"""prefect.yaml's deployments run the flows they name, with parameters those flows take.

The checks are derived from the flows themselves (their names, signatures and schemas),
not from the values written in prefect.yaml, so a flow's parameters can change and these
tests say which deployment no longer fits.
"""

from __future__ import annotations

import importlib
import re
import zoneinfo
from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect import Flow
from prefect.client.schemas.objects import ConcurrencyLimitConfig
from prefect.client.schemas.schedules import CronSchedule, IntervalSchedule, RRuleSchedule
from prefect.flows import load_flow_from_entrypoint
from prefect.utilities.schema_tools import validate

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


def _flow_modules() -> list[str]:
    return sorted(
        f"flows.{path.stem}" for path in (REPO / "flows").glob("*.py") if path.stem != "__init__"
    )


def _flows_defined_in_flows() -> dict[str, Flow[Any, Any]]:
    """Every flow object the `flows` package defines, by `file.py:function` entrypoint."""
    found = {}
    for module_name in _flow_modules():
        module = importlib.import_module(module_name)
        for attribute, value in vars(module).items():
            if isinstance(value, Flow) and value.fn.__module__ == module_name:
                found[f"flows/{module_name.split('.')[1]}.py:{attribute}"] = value
    return found


def test_every_flow_has_a_deployment_named_after_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """`flow/deployment` names (as `prefect deployment run` and ci_run take them) resolve:
    each deployment's flow part is the name of the flow its entrypoint loads."""
    monkeypatch.chdir(REPO)
    declared = deployments()
    flows = _flows_defined_in_flows()
    assert flows
    assert {d["entrypoint"] for d in declared.values()} == set(flows)
    for name, deployment in declared.items():
        flow = load_flow_from_entrypoint(deployment["entrypoint"])
        assert name.split("/")[0] == flow.name
        assert flow.name == flows[deployment["entrypoint"]].name


@pytest.mark.parametrize("name", sorted(deployments()))
def test_parameters_validate_against_the_flows_schema(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a deployment supplies is what its flow takes, with the types the flow's
    signature gives; runs that start unattended (a schedule, or an event with the trigger's
    parameters) lack no required one, while the others may leave them to the person or
    pipeline that starts them."""
    monkeypatch.chdir(REPO)
    deployment = deployments()[name]
    flow = load_flow_from_entrypoint(deployment["entrypoint"])
    schema = flow.parameters.model_dump_for_openapi()
    parameters = deployment.get("parameters") or {}
    for trigger in deployment.get("triggers") or []:
        # The templates render to strings from the event: they must fit the parameter.
        supplied = {**parameters, **trigger["parameters"]}
        errors = validate(supplied, schema, ignore_required=False)
        assert not errors, [error.message for error in errors]
    # A scheduled run gets only these; the others get the rest from whoever starts them.
    errors = validate(parameters, schema, ignore_required=not deployment.get("schedules"))
    assert not errors, [error.message for error in errors]
    unknown = set(parameters) - set(schema["properties"])
    assert not unknown, f"{name} sets parameters its flow does not take: {sorted(unknown)}"
    if deployment.get("schedules"):
        # As a scheduled run binds them: pydantic coercion, defaults filled in.
        flow.validate_parameters(parameters)


@pytest.mark.parametrize("name", sorted(deployments()))
def test_files_a_deployment_names_are_in_the_repository(name: str) -> None:
    """A value naming a config file (relative to the repository, the runs' working
    directory) points at a file that is there."""
    for value in (deployments()[name].get("parameters") or {}).values():
        if isinstance(value, str) and Path(value).suffix in {".json", ".yaml", ".yml"}:
            assert (REPO / value).is_file(), f"{name}: {value} is not in the repository"


def test_schedules_parse_as_prefect_schedules() -> None:
    """Each schedule is one Prefect understands, with a real time zone, on or off."""
    schedules = [
        (name, schedule)
        for name, deployment in deployments().items()
        for schedule in deployment.get("schedules") or []
    ]
    assert schedules
    kinds = {"cron": CronSchedule, "interval": IntervalSchedule, "rrule": RRuleSchedule}
    for name, schedule in schedules:
        [kind] = [key for key in kinds if key in schedule]
        fields = {k: v for k, v in schedule.items() if k not in {"active", "max_scheduled_runs"}}
        parsed = kinds[kind].model_validate(fields)
        assert parsed.timezone in zoneinfo.available_timezones(), name
        assert isinstance(schedule.get("active", True), bool), name


def test_concurrency_limits_parse_as_prefect_limits() -> None:
    limits = {
        name: d["concurrency_limit"]
        for name, d in deployments().items()
        if d.get("concurrency_limit") is not None
    }
    for name, limit in limits.items():
        parsed = ConcurrencyLimitConfig.model_validate(limit)
        assert parsed.limit >= 1, name


def test_the_work_pools_named_are_the_ones_the_readme_creates() -> None:
    """A reader following the README creates every pool the deployments run on, and
    starts a worker on it."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    pools = {d["work_pool"]["name"] for d in deployments().values()}
    assert pools
    for pool in pools:
        assert f"prefect work-pool create {pool} " in readme
        assert f"prefect worker start --pool {pool}" in readme


def test_the_readme_and_pipelines_name_only_declared_deployments() -> None:
    declared = deployments()
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for name in declared:
        flow, deployment = name.split("/")
        assert f"`{name}`" in readme or (f"`{flow}`" in readme and f"`{deployment}`" in readme)
    # Every deployment a README command starts exists, as every one the pipelines start.
    run_in_readme = set(re.findall(r"(?:deployment run|ci_run) '([^']+)'", readme))
    assert run_in_readme
    assert run_in_readme <= set(declared), sorted(run_in_readme - set(declared))
    started = {
        found
        for path in (REPO / ".devops" / "pipelines").glob("*.yml")
        for found in re.findall(r"deployments\.ci_run '([^']+)'", path.read_text(encoding="utf-8"))
    }
    assert started
    assert started <= set(declared), sorted(started - set(declared))


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
