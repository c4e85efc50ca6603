"""Read the Azure DevOps pipelines as Azure DevOps would: stages, jobs, steps, and command
lines with their template parameters and variables expanded."""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
PIPELINES = REPO / ".devops" / "pipelines"
NAMES = ["platform_ci_dev", "platform_pr_dev", "delivery_prod", "register_model"]
# Values Azure DevOps would give its predefined variables, for expanding command lines.
PREDEFINED = {
    "Build.BuildNumber": "20261122.3",
    "Build.BuildId": "4711",
    "Build.DefinitionName": "register_model",
    "System.CollectionUri": "https://dev.azure.com/example/",
    "System.TeamProject": "modelferry",
    "Common.TestResultsDirectory": "/agent/_work/1/TestResults",
    "Pipeline.Workspace": "/agent/_work/1",
    "Agent.OS": "Linux",
}
# What the variable groups hold.
GROUP_VARIABLES = {"PREFECT_API_URL", "PREFECT_API_KEY"}
# What a runtime expression (`$[ stageDependencies... ]`) yields: here, a flow run id.
RUNTIME_VALUE = "0b7e5f9e-6f1a-4c43-9b1e-2f7f0f1d2c3a"


@cache
def pipeline(name: str) -> dict[str, Any]:
    """The parsed `.devops/pipelines/{name}.yml`."""
    data: dict[str, Any] = yaml.safe_load((PIPELINES / f"{name}.yml").read_text("utf-8"))
    return data


def stages(name: str) -> list[dict[str, Any]]:
    """The pipeline's stages, in order."""
    return list(pipeline(name)["stages"])


def jobs(stage: dict[str, Any]) -> list[dict[str, Any]]:
    """A stage's jobs (plain and deployment jobs)."""
    return list(stage["jobs"])


def job_name(job: dict[str, Any]) -> str:
    """A job's name, whether it is a `job` or a `deployment`."""
    return str(job.get("job") or job["deployment"])


def steps(job: dict[str, Any]) -> list[dict[str, Any]]:
    """A job's steps; a deployment job's are those of its runOnce strategy."""
    if "steps" in job:
        return list(job["steps"])
    return list(job["strategy"]["runOnce"]["deploy"]["steps"])


def all_steps(name: str) -> Iterator[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]]:
    """Every step of the pipeline with its stage and job."""
    for stage in stages(name):
        for job in jobs(stage):
            for step in steps(job):
                yield stage, job, step


def expand(text: str, name: str, job: dict[str, Any] | None = None) -> str:
    """Substitute template parameters and variables as Azure DevOps would."""
    spec = pipeline(name)
    defaults = {
        p["name"]: p.get("default", f"sample-{p['name']}") for p in spec.get("parameters", [])
    }
    text = re.sub(r"\$\{\{\s*parameters\.(\w+)\s*\}\}", lambda m: str(defaults[m[1]]), text)
    variables = {v["name"]: str(v["value"]) for v in spec.get("variables", []) if "name" in v}
    for key, value in ((job or {}).get("variables") or {}).items():
        variables[key] = RUNTIME_VALUE if str(value).startswith("$[") else str(value)
    variables |= PREDEFINED | {name: f"group-{name}" for name in GROUP_VARIABLES}

    def value(match: re.Match[str]) -> str:
        # An undefined variable stays `$(name)` in Azure DevOps: a mistake, not a value.
        assert match[1] in variables, f"{name}: $({match[1]}) is not defined"
        return variables[match[1]]

    for _ in range(3):
        text = re.sub(r"\$\(([\w.]+)\)", value, text)
    return text
