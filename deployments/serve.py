"""Serve every deployment of prefect.yaml from this process, without a work pool.

    PREFECT_API_URL=http://127.0.0.1:4200/api python -m deployments.serve

prefect.yaml stays the one source of truth: this reads its deployments (entrypoint,
parameters, schedules, concurrency limit, triggers, tags, description) and serves them
all from one long-lived process, schedules included, so a single machine needs no work
pool or worker. `prefect deployment run 'retrain-and-deliver/nightly'` works the same
against either. Run it from the repository root (entrypoints and config paths are
relative to it).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import yaml
from prefect import serve
from prefect.client.schemas.objects import ConcurrencyLimitConfig
from prefect.client.schemas.schedules import CronSchedule, IntervalSchedule, RRuleSchedule
from prefect.deployments.runner import RunnerDeployment
from prefect.events import DeploymentEventTrigger, DeploymentTriggerTypes, TriggerTypes
from prefect.flows import Flow, load_flow_from_entrypoint

from deployments.dispatch import sync_result

PREFECT_YAML = Path(__file__).parents[1] / "prefect.yaml"


def read_spec(path: Path = PREFECT_YAML) -> list[dict[str, Any]]:
    """The `deployments` list of prefect.yaml."""
    spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    deployments: list[dict[str, Any]] = spec.get("deployments") or []
    return deployments


def _schedule(entry: dict[str, Any]) -> CronSchedule | IntervalSchedule | RRuleSchedule:
    timezone = entry.get("timezone")
    if "cron" in entry:
        return CronSchedule(cron=entry["cron"], timezone=timezone)
    if "interval" in entry:
        return IntervalSchedule(interval=entry["interval"], timezone=timezone)
    if "rrule" in entry:
        return RRuleSchedule(rrule=entry["rrule"], timezone=timezone)
    raise ValueError(f"prefect.yaml: a schedule needs cron, interval or rrule: {entry}")


def _concurrency(value: Any) -> int | ConcurrencyLimitConfig | None:
    if value is None or isinstance(value, int):
        return value
    return ConcurrencyLimitConfig(**value)


def build_deployments(path: Path = PREFECT_YAML) -> list[RunnerDeployment]:
    """One runner deployment per prefect.yaml deployment, as declared there."""
    built: list[RunnerDeployment] = []
    for entry in read_spec(path):
        flow: Flow[..., Any] = load_flow_from_entrypoint(entry["entrypoint"])
        schedules = [_schedule(s) for s in entry.get("schedules") or [] if s.get("active", True)]
        # Disabled triggers are registered disabled, as `prefect deploy` does.
        triggers: list[DeploymentTriggerTypes | TriggerTypes] = [
            DeploymentEventTrigger(**t) for t in entry.get("triggers") or []
        ]
        deployment = sync_result(
            flow.to_deployment(
                name=entry["name"],
                description=entry.get("description"),
                parameters=entry.get("parameters") or {},
                tags=entry.get("tags") or [],
                schedules=schedules or None,
                concurrency_limit=_concurrency(entry.get("concurrency_limit")),
                triggers=triggers or None,
            )
        )
        built.append(deployment)
    return built


def main(argv: list[str] | None = None) -> None:
    """Register every deployment and run their flow runs until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m deployments.serve")
    parser.add_argument("--prefect-yaml", type=Path, default=PREFECT_YAML)
    args = parser.parse_args(argv)
    serve(*build_deployments(args.prefect_yaml))


if __name__ == "__main__":
    main()
