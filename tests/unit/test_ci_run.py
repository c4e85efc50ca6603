"""The CI entry script: pipeline variables typed by real flow schemas, exit codes, reports."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from uuid import uuid4

import pytest
from prefect.client.schemas.objects import FlowRun, State, StateType
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.states import Cancelled, Completed, Crashed, Failed, Paused, Running, Scheduled
from prefect.utilities.callables import parameter_schema

from deployments.ci_run import command
from deployments.ci_run.command import (
    EXIT_API,
    EXIT_COMPLETED,
    EXIT_FAILED,
    EXIT_TIMEOUT,
    EXIT_USAGE,
    azure_devops_outputs,
    build_context,
    exit_code_for,
    parse_args,
    report,
)
from deployments.ci_run.parameters import (
    UsageError,
    coerce_value,
    collect_raw_parameters,
    describe_parameters,
    describe_type,
    map_parameters,
    secret_parameter_names,
)
from flows.batch_score import batch_score
from flows.deploy_online_endpoint import deploy_online_endpoint
from modelferry.approval.pause import APPROVAL_PAUSE_KEY, SERVER_GRACE_SECONDS

ROLLOUT = "deploy-online-endpoint/manual"
STRINGS = {"type": "array", "items": {"type": "string"}}


@pytest.fixture(scope="module")
def rollout_schema() -> dict[str, Any]:
    """The schema Prefect stores for deploy-online-endpoint, from the flow itself."""
    return parameter_schema(deploy_online_endpoint.fn).model_dump_for_openapi()


# -- collecting raw values ------------------------------------------------------------------


def test_environment_variables_with_the_prefix_become_lower_case_names() -> None:
    environ = {
        "MODELFERRY_PARAM_MODEL_NAME": "iris",
        "MODELFERRY_PARAM_STEPS": "10,100",
        "BUILD_BUILDID": "7",
        "MODELFERRY_PARAM_": "no name",
    }
    raw = collect_raw_parameters([], environ, "MODELFERRY_PARAM_")
    assert raw == {"model_name": "iris", "steps": "10,100"}


def test_explicit_params_win_over_the_environment_and_keep_equals_signs() -> None:
    environ = {"MODELFERRY_PARAM_MODEL_NAME": "iris"}
    pairs = ["model_name=wine", "tracking_uri=http://mlflow:5000/?a=b"]
    raw = collect_raw_parameters(pairs, environ, "MODELFERRY_PARAM_")
    assert raw == {"model_name": "wine", "tracking_uri": "http://mlflow:5000/?a=b"}


def test_without_a_prefix_the_environment_is_ignored() -> None:
    assert collect_raw_parameters([], {"MODELFERRY_PARAM_X": "1"}, None) == {}


@pytest.mark.parametrize("pair", ["model_name", "=iris"])
def test_a_param_that_is_not_name_equals_value_is_refused(pair: str) -> None:
    with pytest.raises(UsageError, match="name=value"):
        collect_raw_parameters([pair], {}, None)


def test_an_undefined_pipeline_variable_is_named() -> None:
    environ = {"MODELFERRY_PARAM_MODEL_NAME": "$(model.name)"}
    with pytest.raises(UsageError, match=r"'model\.name' is not defined"):
        collect_raw_parameters([], environ, "MODELFERRY_PARAM_")


# -- typing by the schema -------------------------------------------------------------------


def test_values_are_typed_by_the_flow_schema(rollout_schema: dict[str, Any]) -> None:
    raw = {
        "model_name": "iris",
        "rollout.min_requests": "3",
        "rollout.steps": "10, 50,100",
        "rollout.step_seconds": "2.5",
        "rollout.require_traffic": "True",
        "model_version": "3",
        "rollout.endpoint": "",
        "rollout.strategy": "blue-green",
    }
    typed = map_parameters(raw, rollout_schema, {}, ROLLOUT)
    assert typed == {
        "model_name": "iris",
        "rollout": {
            "min_requests": 3,
            "steps": [10, 50, 100],
            "step_seconds": 2.5,
            "require_traffic": True,
            # `str | None`: an empty value is None.
            "endpoint": None,
            "strategy": "blue-green",
        },
        # `str | None`: a number stays a string.
        "model_version": "3",
    }
    assert type(typed["rollout"]["min_requests"]) is int


def test_lists_and_objects_also_come_as_json(rollout_schema: dict[str, Any]) -> None:
    typed = map_parameters(
        {"rollout.steps": "[25, 100]", "targets": '{"store": "x/y"}'},
        rollout_schema,
        {"model_name": "x"},
        ROLLOUT,
    )
    assert typed == {"rollout": {"steps": [25, 100]}, "targets": {"store": "x/y"}}


def test_a_field_wins_over_its_whole_object(rollout_schema: dict[str, Any]) -> None:
    raw = {"rollout": '{"strategy": "canary", "step_seconds": 5}', "rollout.strategy": "blue-green"}
    typed = map_parameters(raw, rollout_schema, {"model_name": "x"}, ROLLOUT)
    assert typed == {"rollout": {"strategy": "blue-green", "step_seconds": 5}}


def test_environment_style_names_match_the_parameters(rollout_schema: dict[str, Any]) -> None:
    environ = {"MODELFERRY_PARAM_MODEL_NAME": "iris", "MODELFERRY_PARAM_ROLLOUT__MAX_P99_MS": "120"}
    raw = collect_raw_parameters(
        ["targets.tracking-uri=http://mlflow:5000"], environ, "MODELFERRY_PARAM_"
    )
    typed = map_parameters(raw, rollout_schema, {}, ROLLOUT)
    assert typed == {
        "model_name": "iris",
        "rollout": {"max_p99_ms": 120.0},
        "targets": {"tracking_uri": "http://mlflow:5000"},
    }


def test_every_problem_is_named_with_the_parameters_listed(
    rollout_schema: dict[str, Any],
) -> None:
    raw = {
        "rollout.min_requests": "many",
        "rollout.strategy": "purple",
        "rollout.colour": "red",
        "colour": "red",
    }
    with pytest.raises(UsageError) as caught:
        map_parameters(raw, rollout_schema, {}, ROLLOUT)
    message = str(caught.value)
    assert message.startswith(ROLLOUT)
    assert "parameter 'rollout.min_requests': 'many' is not an integer" in message
    assert "'purple' is not one of blue-green, canary" in message
    assert "unknown parameter 'rollout.colour': rollout has endpoint, strategy" in message
    assert "unknown parameter 'colour'" in message
    assert "missing required parameter(s): model_name" in message
    assert "  model_name (string; required)" in message
    assert '  rollout (object; default {"endpoint": null, "strategy": "canary"' in message
    assert "    fields, as rollout.FIELD=VALUE: endpoint, strategy, steps," in message
    assert "'purple' is not one of blue-green, canary" in message


def test_deployment_defaults_count_as_given(rollout_schema: dict[str, Any]) -> None:
    assert map_parameters({}, rollout_schema, {"model_name": "iris"}, ROLLOUT) == {}
    with pytest.raises(UsageError, match=r"deployment default \"iris\""):
        map_parameters({"bogus": "1"}, rollout_schema, {"model_name": "iris"}, ROLLOUT)


@pytest.mark.parametrize(
    ("raw", "schema", "expected"),
    [
        ("yes", {"type": "boolean"}, True),
        ("OFF", {"type": "boolean"}, False),
        ("-4", {"type": "integer"}, -4),
        ("1e3", {"type": "number"}, 1000.0),
        ("", {"type": "array", "items": {"type": "string"}}, []),
        ('{"a": 1}', {"type": "object"}, {"a": 1}),
        ("null", {"anyOf": [{"type": "integer"}, {"type": "null"}]}, None),
        ("7", {"anyOf": [{"type": "string"}, {"type": "integer"}]}, 7),
        ("x", {"anyOf": [{"type": "integer"}, {"type": "string"}]}, "x"),
        (
            "a,b",
            {"anyOf": [{"type": "array", "items": {"type": "string"}}, {"type": "string"}]},
            "a,b",
        ),
        ('["a"]', {"anyOf": [{"type": "string"}, {"type": "array"}]}, ["a"]),
        (
            "a,b",
            {"anyOf": [{"type": "array", "items": {"type": "string"}}, {"type": "null"}]},
            ["a", "b"],
        ),
        ("", {"type": "string"}, ""),
        ("anything", {}, "anything"),
        ('{"k": "v"}', {"$ref": "#/definitions/Opts"}, {"k": "v"}),
    ],
)
def test_coerce_value(raw: str, schema: dict[str, Any], expected: Any) -> None:
    definitions = {"Opts": {"type": "object", "properties": {"k": {"type": "string"}}}}
    assert coerce_value(raw, schema, definitions) == expected


@pytest.mark.parametrize(
    ("raw", "schema", "reason"),
    [
        ("maybe", {"type": "boolean"}, "not a boolean"),
        ("3.5", {"type": "integer"}, "not an integer"),
        ("nan", {"type": "number"}, "not a finite number"),
        ("10,x", {"type": "array", "items": {"type": "integer"}}, "'x' is not an integer"),
        ("[1", {"type": "array"}, "not a list in JSON"),
        ("[1]", {"type": "object"}, "not a JSON object"),
        ("", {"type": "integer"}, "not an integer"),
    ],
)
def test_coerce_value_refuses(raw: str, schema: dict[str, Any], reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        coerce_value(raw, schema, {})


def test_secret_parameters_are_known_from_the_schema_and_never_shown() -> None:
    schema = parameter_schema(batch_score.fn).model_dump_for_openapi()
    assert secret_parameter_names(schema) == {"sql_url"}
    defaults = {"sql_url": "postgresql://scorer:hunter2@db/predictions"}
    listing = describe_parameters(schema, defaults)
    assert "  sql_url (secret string or string or null; deployment default ********)" in listing
    assert "hunter2" not in listing
    assert describe_parameters({"properties": {}}, {}).endswith("  (none)")
    assert describe_type(schema["properties"]["sql_url"], {}) == ("secret string or string or null")


# -- outcome --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "exit_on_pause", "code"),
    [
        (StateType.COMPLETED, False, EXIT_COMPLETED),
        (StateType.FAILED, False, EXIT_FAILED),
        (StateType.CRASHED, False, EXIT_FAILED),
        (StateType.CANCELLED, False, EXIT_FAILED),
        (StateType.RUNNING, False, EXIT_TIMEOUT),
        (StateType.SCHEDULED, False, EXIT_TIMEOUT),
        (StateType.PAUSED, False, EXIT_TIMEOUT),
        (StateType.PAUSED, True, EXIT_COMPLETED),
        (StateType.RUNNING, True, EXIT_TIMEOUT),
        (None, False, EXIT_TIMEOUT),
    ],
)
def test_exit_codes(state: StateType | None, exit_on_pause: bool, code: int) -> None:
    assert exit_code_for(state, exit_on_pause=exit_on_pause) == code


def test_build_id_becomes_a_tag_and_the_run_environment() -> None:
    environ = {"BUILD_BUILDID": "20261122.7", "BUILD_SOURCEVERSION": "a" * 40, "HOME": "/x"}
    tags, env = build_context(None, environ)
    assert tags == ["ci-build:20261122.7"]
    assert env == {"BUILD_BUILDID": "20261122.7", "BUILD_SOURCEVERSION": "a" * 40}
    assert build_context("99", {}) == (["ci-build:99"], {"BUILD_BUILDID": "99"})
    assert build_context(None, {}) == ([], {})


def test_azure_devops_output_variables() -> None:
    assert azure_devops_outputs({"FLOW_RUN_ID": "abc"}) == [
        "##vso[task.setvariable variable=FLOW_RUN_ID;isOutput=true]abc"
    ]


def _run(state: Any) -> FlowRun:
    return FlowRun(flow_id=uuid4(), name="brave-otter", state=state)


def test_report_of_a_run_paused_for_approval(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TF_BUILD", raising=False)
    paused: State[Any] = Paused(timeout_seconds=600)
    paused.state_details.run_input_keyset = {"schema": "s", "description": "d", "response": "r"}
    run = _run(paused)
    assert report(run, "http://ui/runs/1", 30, exit_on_pause=False) == EXIT_TIMEOUT
    out = capsys.readouterr().out
    assert "paused waiting for approval" in out
    assert "http://ui/runs/1" in out
    assert f"modelferry approve {run.id} --reviewer NAME" in out
    assert report(run, "http://ui/runs/1", 30, exit_on_pause=True) == EXIT_COMPLETED


def test_a_paused_approval_reports_the_reviewers_deadline_not_the_servers(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TF_BUILD", raising=False)
    paused: State[Any] = Paused(timeout_seconds=600 + SERVER_GRACE_SECONDS)
    paused.state_details.pause_key = APPROVAL_PAUSE_KEY
    paused.state_details.run_input_keyset = {"schema": "s", "description": "d", "response": "r"}
    server_deadline = paused.state_details.pause_timeout
    assert server_deadline is not None
    reviewer = server_deadline - timedelta(seconds=SERVER_GRACE_SECONDS)

    report(_run(paused), "http://ui/runs/1", 30, exit_on_pause=True)

    out = capsys.readouterr().out
    assert f"it waits until {reviewer:%Y-%m-%d %H:%M:%S}" in out
    assert f"{server_deadline:%H:%M:%S}" not in out


def test_report_of_a_run_nothing_picked_up(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TF_BUILD", raising=False)
    assert report(_run(Scheduled()), "u", 5, exit_on_pause=False) == EXIT_TIMEOUT
    assert "Timed out after 5 s while it was Scheduled; nothing picked it up" in (
        capsys.readouterr().out
    )
    run = _run(Running())
    assert report(run, "u", 5, exit_on_pause=False) == EXIT_TIMEOUT
    assert f"prefect flow-run cancel {run.id}" in capsys.readouterr().out


@pytest.mark.parametrize("state", [Failed(message="boom"), Crashed(message="boom"), Cancelled()])
def test_report_of_a_failed_run_under_azure_devops(
    state: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TF_BUILD", "True")
    run = _run(state)
    assert report(run, "http://ui/r", 5, exit_on_pause=False) == EXIT_FAILED
    out = capsys.readouterr().out
    assert f"##vso[task.setvariable variable=FLOW_RUN_ID;isOutput=true]{run.id}" in out
    assert f"##vso[task.setvariable variable=FLOW_RUN_STATE;isOutput=true]{state.name}" in out
    assert "##vso[task.logissue type=error]brave-otter" in out


def test_report_of_a_completed_run(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TF_BUILD", raising=False)
    assert report(_run(Completed(message="done")), "u", 5, exit_on_pause=False) == 0
    out = capsys.readouterr().out
    assert out == "Flow run 'brave-otter' is Completed: done\n"


# -- command line ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["train-and-register/ci"],
        ["train-and-register", "--watch-timeout", "60"],
        ["a/b/c", "--watch-timeout", "60"],
        ["train-and-register/ci", "--watch-timeout", "0"],
        ["train-and-register/ci", "--watch-timeout", "soon"],
        ["--watch-timeout", "60"],
        ["train-and-register/ci", "--flow-run-id", str(uuid4()), "--watch-timeout", "60"],
        ["--flow-run-id", str(uuid4()), "--param", "a=1", "--watch-timeout", "60"],
        ["--flow-run-id", "not-a-uuid", "--watch-timeout", "60"],
    ],
)
def test_bad_command_lines_exit_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        parse_args(argv)
    assert caught.value.code == EXIT_USAGE


def test_build_id_defaults_to_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BUILD_BUILDID", "4711")
    args = parse_args(["a/b", "--watch-timeout", "60", "--param", "x=1", "--param", "y=2"])
    assert (args.build_id, args.watch_timeout, args.param) == ("4711", 60.0, ["x=1", "y=2"])


def test_an_unreachable_api_exits_4(capsys: pytest.CaptureFixture[str]) -> None:
    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        assert command.main(["a/b", "--watch-timeout", "5"]) == EXIT_API
    err = capsys.readouterr().err
    assert "cannot reach the Prefect API at http://127.0.0.1:9/api" in err


def test_no_api_url_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        assert command.main(["a/b", "--watch-timeout", "5"]) == EXIT_USAGE
    assert "PREFECT_API_URL is not set" in capsys.readouterr().err
