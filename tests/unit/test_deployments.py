"""prefect.yaml and the serve script describe deployments that load and validate."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect.client.schemas.schedules import CronSchedule
from prefect.flows import load_flow_from_entrypoint

REPO = Path(__file__).parents[2]


def deployments() -> dict[str, dict[str, Any]]:
    spec = yaml.safe_load((REPO / "prefect.yaml").read_text(encoding="utf-8"))
    return {d["name"]: d for d in spec["deployments"]}


def test_expected_deployments_exist() -> None:
    found = deployments()
    assert found["nightly"]["entrypoint"] == "flows/retrain_and_deliver.py:retrain_and_deliver"
    assert found["ci"]["entrypoint"] == "flows/train_and_register.py:train_and_register"
    assert found["daily"]["entrypoint"] == "flows/batch_score.py:batch_score"


@pytest.mark.parametrize("name", ["nightly", "ci", "daily"])
def test_entrypoints_load_and_parameters_validate(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPO)
    deployment = deployments()[name]
    flow = load_flow_from_entrypoint(deployment["entrypoint"])
    flow.validate_parameters(deployment["parameters"])
    config = deployment["parameters"].get("config_path")
    assert config is None or Path(REPO / config).is_file()


def test_nightly_schedule_is_two_am_with_timezone() -> None:
    (schedule,) = deployments()["nightly"]["schedules"]
    cron = CronSchedule(cron=schedule["cron"], timezone=schedule["timezone"])
    assert cron.cron == "0 2 * * *"
    assert cron.timezone == "Europe/Amsterdam"


def test_serve_script_builds_every_prefect_yaml_deployment(monkeypatch: pytest.MonkeyPatch) -> None:
    """prefect.yaml is the one source of truth: serve builds exactly what it declares."""
    from deployments import serve

    monkeypatch.chdir(REPO)
    declared = deployments()
    built = {d.name: d for d in serve.build_deployments()}
    assert set(built) == set(declared)
    for name, spec in declared.items():
        deployment = built[name]
        assert deployment.entrypoint is not None
        assert deployment.parameters == (spec.get("parameters") or {})
        assert set(deployment.tags) == set(spec.get("tags") or [])
        crons = [s.schedule.cron for s in deployment.schedules or []]  # type: ignore[union-attr]
        assert crons == [s["cron"] for s in spec.get("schedules") or [] if s.get("active", True)]
        assert len(deployment.triggers) == len(spec.get("triggers") or [])


def test_no_secret_in_prefect_yaml() -> None:
    """Secrets are referenced through blocks, never written into prefect.yaml."""
    spec = yaml.safe_load((REPO / "prefect.yaml").read_text(encoding="utf-8"))

    def walk(node: Any) -> Iterator[tuple[str, Any]]:
        if isinstance(node, dict):
            for key, value in node.items():
                yield str(key), value
                yield from walk(value)
        elif isinstance(node, list):
            for item in node:
                yield from walk(item)

    for key, value in walk(spec):
        assert key.lower() not in {"password", "token", "api_key", "client_secret", "key"}
        if isinstance(value, str):
            assert not re.search(r"://[^/@\s]+:[^/@\s]+@", value), value
