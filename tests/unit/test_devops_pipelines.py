"""The Azure DevOps pipelines parse, run the deployments prefect.yaml declares with
parameters their flows accept, keep secrets in `env:`, and wire their stages together."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from functools import cache
from typing import Any

import pytest
import yaml
from prefect.flows import Flow, load_flow_from_entrypoint
from prefect.states import Paused
from prefect.utilities.callables import parameter_schema

from deployments.ci_run.command import OUTPUT_VARIABLES, parse_args
from deployments.ci_run.parameters import collect_raw_parameters, map_parameters
from modelferry.cli import _build_parser as modelferry_parser
from modelferry.config import load_config
from tests.devops_pipelines import (
    NAMES,
    REPO,
    RUNTIME_VALUE,
    all_steps,
    expand,
    job_name,
    jobs,
    pipeline,
    stages,
    steps,
)

PARAM_PREFIX = "MODELFERRY_PARAM_"
DELIVERY_PARAMETERS = [
    "deploy_env",
    "model_type",
    "model_name",
    "target_device_id",
    "edge_package_name",
    "edge_package_version",
]


def ci_run_argv(script: str) -> list[str] | None:
    words = shlex.split(script)
    if "deployments.ci_run" not in words:
        return None
    return words[words.index("deployments.ci_run") + 1 :]


def ci_runs(
    name: str,
) -> Iterator[tuple[dict[str, Any], dict[str, Any], dict[str, Any], list[str]]]:
    """Every ci_run invocation: stage, job, step and its expanded arguments."""
    for stage, job, step in all_steps(name):
        argv = ci_run_argv(expand(step.get("script", ""), name, job))
        if argv is not None:
            yield stage, job, step, argv


@cache
def declared_deployments() -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """prefect.yaml's deployments by full name: their spec and their flow's schema."""
    spec = yaml.safe_load((REPO / "prefect.yaml").read_text("utf-8"))
    found = {}
    for entry in spec["deployments"]:
        flow: Flow[..., Any] = load_flow_from_entrypoint(str(REPO / entry["entrypoint"]))
        schema = parameter_schema(flow.fn).model_dump_for_openapi()
        found[f"{flow.name}/{entry['name']}"] = (entry, schema)
    return found


def raw_parameters(
    step: dict[str, Any], argv: list[str], name: str, job: dict[str, Any]
) -> dict[str, str]:
    """The raw parameter values a ci_run step passes, from its command line and env."""
    args = parse_args(argv)
    env = {k: expand(str(v), name, job) for k, v in (step.get("env") or {}).items()}
    return collect_raw_parameters(args.param, env, args.params_from_env)


def walk(node: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield (*path, str(key)), value
            yield from walk(value, (*path, str(key)))
    elif isinstance(node, list):
        for item in node:
            yield from walk(item, path)


# -- every pipeline -------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_pipeline_parses_with_stages_jobs_and_steps(name: str) -> None:
    assert stages(name)
    for stage in stages(name):
        assert re.fullmatch(r"[A-Za-z_]\w*", stage["stage"])
        for job in jobs(stage):
            assert re.fullmatch(r"[A-Za-z_]\w*", job_name(job))
            assert steps(job)
            assert "pool" in job


@pytest.mark.parametrize("name", NAMES)
def test_every_ci_run_names_a_declared_deployment_with_accepted_parameters(name: str) -> None:
    for _stage, job, step, argv in ci_runs(name):
        args = parse_args(argv)
        if args.flow_run_id is not None:
            continue
        assert args.deployment in declared_deployments(), args.deployment
        entry, schema = declared_deployments()[args.deployment]
        raw = raw_parameters(step, argv, name, job)
        # Raises, naming the problem, when a parameter is unknown, mistyped or missing.
        map_parameters(raw, schema, entry.get("parameters") or {}, args.deployment)


@pytest.mark.parametrize("name", NAMES)
def test_watch_timeouts_end_before_the_job_is_killed(name: str) -> None:
    for _stage, job, _step, argv in ci_runs(name):
        assert parse_args(argv).watch_timeout < job["timeoutInMinutes"] * 60


@pytest.mark.parametrize("name", NAMES)
def test_secrets_only_reach_steps_through_env(name: str) -> None:
    spec = pipeline(name)
    for path, value in walk(spec):
        if isinstance(value, str) and "PREFECT_API_KEY" in value:
            assert path[-2:] == ("env", "PREFECT_API_KEY"), path
            assert value == "$(PREFECT_API_KEY)"
        if isinstance(value, str):
            assert not re.search(r"://[^/@\s$]+:[^/@\s]+@", value), value
            assert not re.search(r"\bpnu_\w{20,}", value), value
    for variable in spec.get("variables", []):
        assert "KEY" not in str(variable.get("name", "")).upper()
    for _stage, _job, step in all_steps(name):
        script = step.get("script", "")
        if "deployments.ci_run" in script or "modelferry approve" in script:
            env = step.get("env") or {}
            assert env.get("PREFECT_API_URL") == "$(PREFECT_API_URL)"
            assert env.get("PREFECT_API_KEY") == "$(PREFECT_API_KEY)"
            groups = [v["group"] for v in spec["variables"] if "group" in v]
            assert len(groups) == 1


@pytest.mark.parametrize("name", NAMES)
def test_output_variable_references_point_at_a_ci_run_step(name: str) -> None:
    stage_jobs = {s["stage"]: {job_name(j): j for j in jobs(s)} for s in stages(name)}
    refs = re.compile(
        r"stageDependencies\.(\w+)\.(\w+)\.outputs\['(\w+)\.(\w+)'\]"
        r"|dependencies\.(\w+)\.outputs\['(\w+)\.(\w+)\.(\w+)'\]"
    )
    for stage in stages(name):
        text = yaml.safe_dump(stage)
        for match in refs.finditer(text):
            source, job, step_name, variable = (g for g in match.groups() if g)
            assert source in stage_jobs, source
            assert source in (stage.get("dependsOn") or []), (stage["stage"], source)
            (step,) = [s for s in steps(stage_jobs[source][job]) if s.get("name") == step_name]
            assert "deployments.ci_run" in step["script"]
            assert variable in OUTPUT_VARIABLES


# -- platform CI ----------------------------------------------------------------------------


def test_platform_ci_trains_packages_and_delivers_in_order() -> None:
    spec = pipeline("platform_ci_dev")
    assert spec["trigger"]["branches"]["include"] == ["main"]
    assert spec["pr"] == "none"
    assert [s["stage"] for s in stages("platform_ci_dev")] == ["Train", "Package", "Deliver"]
    assert [s.get("dependsOn") for s in stages("platform_ci_dev")] == [None, "Train", "Package"]
    runs = [parse_args(argv).deployment for *_, argv in ci_runs("platform_ci_dev")]
    assert runs == [
        "train-and-register/ci",
        "package-model/ci",
        "deliver-package/standalone-delivery",
    ]


def test_platform_ci_fails_on_a_rejected_model_and_delivers_what_it_packaged() -> None:
    (train, package, deliver) = [
        map_parameters(
            raw_parameters(step, argv, "platform_ci_dev", job),
            declared_deployments()[parse_args(argv).deployment][1],
            {},
            "",
        )
        for _stage, job, step, argv in ci_runs("platform_ci_dev")
    ]
    assert train["fail_on_reject"] is True
    assert package["package_id"] == deliver["edge_package_name"]
    assert package["package_version"] == deliver["edge_package_version"] == "20261122.3"
    assert deliver["deploy_env"] == "dev"


# -- pull requests --------------------------------------------------------------------------


def test_pr_pipeline_lints_type_checks_and_runs_the_unit_tests() -> None:
    spec = pipeline("platform_pr_dev")
    assert spec["trigger"] == "none"
    assert spec["pr"]["branches"]["include"] == ["main"]
    scripts = [step.get("script", "") for *_, step in all_steps("platform_pr_dev")]
    for command in ["ruff check .", "ruff format --check .", "mypy", "python -m pytest tests/unit"]:
        assert any(s.startswith(command) for s in scripts), command


# -- production delivery --------------------------------------------------------------------


def test_delivery_prod_is_manual_and_passes_the_six_parameters_through_env() -> None:
    spec = pipeline("delivery_prod")
    assert (spec["trigger"], spec["pr"]) == ("none", "none")
    declared = {p["name"]: p for p in spec["parameters"]}
    assert set(DELIVERY_PARAMETERS) <= set(declared)
    for name in DELIVERY_PARAMETERS:
        assert declared[name]["type"] == "string"
    ((_stage, job, step, argv),) = ci_runs("delivery_prod")
    assert parse_args(argv).deployment == "deliver-package/standalone-delivery"
    assert parse_args(argv).params_from_env == PARAM_PREFIX
    env = step["env"]
    for name in DELIVERY_PARAMETERS:
        assert env[f"{PARAM_PREFIX}{name.upper()}"] == f"${{{{ parameters.{name} }}}}"
        # Values never go into the shell command itself.
        assert f"parameters.{name}" not in step["script"]
    assert job["environment"] == "modelferry-prod"


def test_delivery_parameters_are_the_flows() -> None:
    _entry, schema = declared_deployments()["deliver-package/standalone-delivery"]
    assert set(DELIVERY_PARAMETERS) <= set(schema["properties"])


# -- registration with an Azure DevOps approval ---------------------------------------------


def test_register_pipeline_waits_for_a_manual_validation_in_an_agentless_job() -> None:
    by_name = {s["stage"]: s for s in stages("register_model")}
    assert list(by_name) == ["Register", "Approve", "Promote", "Reject"]
    ((_stage, _job, step, argv),) = [
        r for r in ci_runs("register_model") if r[0]["stage"] == "Register"
    ]
    args = parse_args(argv)
    assert (args.deployment, args.exit_on_pause) == ("train-and-register/ci", True)
    assert step["env"][f"{PARAM_PREFIX}APPROVAL"] == "${{ parameters.approval }}"
    approval = {p["name"]: p for p in pipeline("register_model")["parameters"]}["approval"]
    assert set(approval["values"]) <= {"manual", "gate+manual"}

    (job,) = jobs(by_name["Approve"])
    assert job["pool"] == "server"
    (task,) = steps(job)
    assert task["task"] == "ManualValidation@0"
    assert set(task["inputs"]) >= {"notifyUsers", "instructions", "onTimeout"}
    assert task["inputs"]["onTimeout"] == "reject"
    assert "$(flow_run_url)" in task["inputs"]["instructions"]
    # Only a run that actually paused needs a reviewer; Prefect names that state so.
    assert f"'{Paused().name}'" in by_name["Approve"]["condition"]
    # Azure DevOps decides before the paused run's own approval timeout gives up.
    config = load_config(REPO / "config" / "model_config.json")
    assert job["timeoutInMinutes"] * 60 < config.approval.timeout_seconds


@pytest.mark.parametrize(
    ("stage", "result", "rejects"), [("Promote", "Succeeded", False), ("Reject", "Failed", True)]
)
def test_register_pipeline_answers_the_paused_run_then_waits_for_it(
    stage: str, result: str, rejects: bool
) -> None:
    (spec,) = [s for s in stages("register_model") if s["stage"] == stage]
    assert spec["condition"] == f"eq(dependencies.Approve.result, '{result}')"
    (job,) = jobs(spec)
    approve, run = [
        s
        for s in steps(job)
        if "modelferry" in s.get("script", "") or "ci_run" in s.get("script", "")
    ]
    words = shlex.split(expand(approve["script"], "register_model", job))
    assert words[0] == "modelferry"
    args = modelferry_parser().parse_args(words[1:])
    assert (args.command, args.reject) == ("approve", rejects)
    assert args.reviewer
    # Both answer and watch the run the Register stage started.
    assert "stageDependencies.Register.TrainAndRegister" in job["variables"]["flow_run_id"]
    watched = parse_args(ci_run_argv(expand(run["script"], "register_model", job)) or [])
    assert str(watched.flow_run_id) == args.flow_run_id == RUNTIME_VALUE


# -- installs -------------------------------------------------------------------------------


def installed_extras(job: dict[str, Any]) -> set[str]:
    """The extras of modelferry a job's `pip install -e '.[...]'` step installs."""
    for step in steps(job):
        words = shlex.split(step.get("script", ""))
        if words[:4] == ["python", "-m", "pip", "install"] and "-e" in words:
            target = words[words.index("-e") + 1]
            assert target.startswith("."), target
            match = re.fullmatch(r"\.(?:\[([\w,]+)\])?", target)
            assert match, target
            return set((match[1] or "").split(",")) - {""}
    return set()


@pytest.mark.parametrize("name", NAMES)
def test_every_job_that_runs_a_flow_or_the_tests_installs_the_orchestrator(name: str) -> None:
    for stage in stages(name):
        for job in jobs(stage):
            scripts = [step.get("script", "") for step in steps(job)]
            runs_prefect = any(
                "deployments.ci_run" in s or "pytest" in s or s.startswith("mypy") for s in scripts
            )
            if runs_prefect:
                # `python -m deployments.ci_run`, the unit tests and mypy import Prefect and
                # the training stack, which only the orchestrator extra installs.
                assert "orchestrator" in installed_extras(job), (stage["stage"], job_name(job))
