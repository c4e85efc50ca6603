"""`python -m deployments.ci_run` against a real Prefect server with served deployments.

One `prefect server start` (SQLite in a temporary PREFECT_HOME) and one process serving
the small flows below are shared by the module; every test runs the CI entry script as a
pipeline step would, in its own process, and reads the run back from the REST API.

Run as a module, this file serves its flows: `python -m tests.integration.test_ci_run_server`.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from prefect import flow, get_run_logger, pause_flow_run, serve
from prefect.deployments.runner import RunnerDeployment
from prefect.input import RunInput
from prefect.runtime import flow_run

from modelferry_prefect.approvals import connect

pytestmark = pytest.mark.integration

REPO = Path(__file__).parents[2]
BUILD_ID = "20261122.7"
DEPLOYMENTS = {"ci-echo/test", "ci-fail/test", "ci-approval/test"}


# -- the flows the server runs ---------------------------------------------------------------


class Go(RunInput):
    """The answer a paused `ci-approval` run waits for."""

    approve: bool


@flow(name="ci-echo")
def echo_parameters(
    count: int,
    ratio: float,
    steps: list[int],
    enabled: bool,
    label: str,
    note: str | None = "unset",
) -> dict[str, Any]:
    """Log what arrived, with its Python types and the run's tags."""
    received = {
        "count": count,
        "ratio": ratio,
        "steps": steps,
        "enabled": enabled,
        "label": label,
        "note": note,
        "types": [type(v).__name__ for v in (count, ratio, steps, enabled, label, note)],
        "tags": sorted(flow_run.tags),
    }
    get_run_logger().info("received %s", json.dumps(received))
    return received


@flow(name="ci-fail")
def fail_on_purpose() -> None:
    """End Failed with a message a pipeline log should show."""
    raise ValueError("the data is unfit: no label column")


@flow(name="ci-approval")
def wait_for_approval() -> bool:
    """Pause for an approval form, as train-and-register does."""
    answer = pause_flow_run(wait_for_input=Go, timeout=300)
    get_run_logger().info("approved=%s", answer.approve)
    return answer.approve


def serve_test_flows() -> None:
    """Serve the flows above as `<flow>/test` deployments until interrupted."""
    # Called outside an event loop, the sync-compatible to_deployment returns the deployment.
    deployments = [
        echo_parameters.to_deployment("test", tags=["served"]),
        fail_on_purpose.to_deployment("test"),
        wait_for_approval.to_deployment("test"),
    ]
    serve(*(cast(RunnerDeployment, d) for d in deployments))


# -- the server, the served flows and the script ---------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def _wait_until(check: Any, timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    pytest.fail(f"{what} within {timeout:g} s; log:\n{log.read_text(errors='replace')[-3000:]}")


@pytest.fixture(scope="module")
def prefect_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A real `prefect server start` with its flows served; yields the environment to use."""
    home = tmp_path_factory.mktemp("prefect-home")
    api_url = f"http://127.0.0.1:{_free_port()}/api"
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PREFECT_", "BUILD_", "MODELFERRY_PARAM_")) and key != "TF_BUILD"
    }
    env |= {
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": api_url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_UI_ENABLED": "false",
        "PREFECT_LOCAL_STORAGE_PATH": str(home / "results"),
    }
    port = api_url.split(":")[2].split("/")[0]
    server_log = home / "server.log"
    serve_log = home / "serve.log"
    with server_log.open("wb") as out:
        # No background services: the served runner polls for its runs itself, and the
        # scheduler and friends would only compete for the CPU.
        server = subprocess.Popen(
            [
                *(sys.executable, "-m", "prefect", "server", "start"),
                *("--host", "127.0.0.1", "--port", port, "--no-services"),
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    served: subprocess.Popen[bytes] | None = None
    try:
        _wait_until(
            lambda: httpx.get(f"{api_url}/health", timeout=2).status_code == 200,
            90,
            "the Prefect server did not answer",
            server_log,
        )
        with serve_log.open("wb") as out:
            served = subprocess.Popen(
                [sys.executable, "-m", "tests.integration.test_ci_run_server"],
                cwd=REPO,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _wait_until(
            lambda: _deployment_names(api_url) >= DEPLOYMENTS,
            90,
            "the test flows were not served",
            serve_log,
        )
        yield env
    finally:
        if served is not None:
            _stop(served)
        _stop(server)


def _deployment_names(api_url: str) -> set[str]:
    with httpx.Client(base_url=api_url, timeout=5) as client:
        deployments = _post(client, "/deployments/filter")
        flows = {f["id"]: f["name"] for f in _post(client, "/flows/filter")}
    return {f"{flows.get(d['flow_id'])}/{d['name']}" for d in deployments}


def _post(client: httpx.Client, path: str) -> list[dict[str, Any]]:
    response = client.post(path, json={"offset": 0, "limit": 200})
    response.raise_for_status()
    result: list[dict[str, Any]] = response.json()
    return result


def ci_run(
    env: dict[str, str], *args: str, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the CI entry script as an Azure DevOps step would (TF_BUILD set)."""
    return subprocess.run(
        [sys.executable, "-m", "deployments.ci_run", *args, "--poll-interval", "1"],
        cwd=REPO,
        env={**env, "TF_BUILD": "True", **(extra_env or {})},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def output_variable(stdout: str, name: str) -> str:
    match = re.search(rf"##vso\[task\.setvariable variable={name};isOutput=true\](.*)", stdout)
    assert match, stdout
    return match.group(1)


def read_flow_run(env: dict[str, str], flow_run_id: str) -> dict[str, Any]:
    response = httpx.get(f"{env['PREFECT_API_URL']}/flow_runs/{flow_run_id}", timeout=10)
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


# -- the tests -------------------------------------------------------------------------------


def test_completed_run_exits_0_with_typed_parameters_and_the_build_id(
    prefect_env: dict[str, str],
) -> None:
    result = ci_run(
        prefect_env,
        "ci-echo/test",
        "--params-from-env",
        "MODELFERRY_PARAM_",
        "--param",
        "ratio=0.25",
        "--param",
        "enabled=True",
        "--watch-timeout",
        "120",
        extra_env={
            "BUILD_BUILDID": BUILD_ID,
            "MODELFERRY_PARAM_COUNT": "3",
            "MODELFERRY_PARAM_STEPS": "10,50,100",
            "MODELFERRY_PARAM_LABEL": "nightly",
            "MODELFERRY_PARAM_NOTE": "",
        },
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert output_variable(result.stdout, "FLOW_RUN_STATE") == "Completed"

    # What the flow itself received, from its log line echoed by the script.
    line = re.search(r"received (\{.*\})", result.stdout)
    assert line, result.stdout
    received = json.loads(line.group(1))
    assert received["count"] == 3
    assert received["ratio"] == 0.25
    assert received["steps"] == [10, 50, 100]
    assert received["enabled"] is True
    assert received["label"] == "nightly"
    assert received["note"] is None
    assert received["types"] == ["int", "float", "list", "bool", "str", "NoneType"]
    assert f"ci-build:{BUILD_ID}" in received["tags"]

    # What Prefect stored: JSON-typed parameters, the tag, and the run's environment.
    run = read_flow_run(prefect_env, output_variable(result.stdout, "FLOW_RUN_ID"))
    assert run["parameters"] == {
        "count": 3,
        "ratio": 0.25,
        "steps": [10, 50, 100],
        "enabled": True,
        "label": "nightly",
        "note": None,
    }
    assert f"ci-build:{BUILD_ID}" in run["tags"]
    assert run["job_variables"] == {"env": {"BUILD_BUILDID": BUILD_ID}}
    url = output_variable(result.stdout, "FLOW_RUN_URL")
    assert url.endswith(f"/runs/flow-run/{run['id']}")
    assert f"URL: {url}" in result.stdout


def test_failed_run_exits_1_and_prints_the_state_message(prefect_env: dict[str, str]) -> None:
    result = ci_run(prefect_env, "ci-fail/test", "--watch-timeout", "120")
    assert result.returncode == 1, result.stdout + result.stderr
    assert (
        "is Failed: Flow run encountered an exception: "
        "ValueError: the data is unfit: no label column"
    ) in result.stdout
    assert "##vso[task.logissue type=error]" in result.stdout
    run = read_flow_run(prefect_env, output_variable(result.stdout, "FLOW_RUN_ID"))
    assert run["state"]["type"] == "FAILED"


def test_a_run_paused_for_approval_is_handed_over_and_watched_to_the_end(
    prefect_env: dict[str, str],
) -> None:
    # Register stage: start the run and return once it pauses.
    started = ci_run(prefect_env, "ci-approval/test", "--exit-on-pause", "--watch-timeout", "120")
    assert started.returncode == 0, started.stdout + started.stderr
    assert output_variable(started.stdout, "FLOW_RUN_STATE") == "Paused"
    flow_run_id = output_variable(started.stdout, "FLOW_RUN_ID")

    # Without --exit-on-pause, a paused run is a timeout that says where to approve.
    waited = ci_run(prefect_env, "--flow-run-id", flow_run_id, "--watch-timeout", "3")
    assert waited.returncode == 3, waited.stdout + waited.stderr
    assert "paused waiting for approval" in waited.stdout
    assert f"/runs/flow-run/{flow_run_id}" in waited.stdout
    assert f"modelferry approve {flow_run_id} --reviewer NAME" in waited.stdout

    # Promote stage: answer the form, then watch the run finish.
    with connect(prefect_env["PREFECT_API_URL"]) as approvals:
        approvals.resume(flow_run_id, {"approve": True}, schema_timeout=30)
    finished = ci_run(prefect_env, "--flow-run-id", flow_run_id, "--watch-timeout", "120")
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert "approved=True" in finished.stdout
    assert output_variable(finished.stdout, "FLOW_RUN_STATE") == "Completed"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["no-such/deployment"],
            ["no deployment 'no-such/deployment'", "ci-echo/test", "ci-fail/test"],
        ),
        (
            ["ci-echo/test", "--param", "count=three", "--param", "colour=red"],
            [
                "parameter 'count': 'three' is not an integer",
                "unknown parameter 'colour'",
                "missing required parameter(s): ratio, steps, enabled, label",
                "  steps (list of integer; required)",
            ],
        ),
        (
            [
                *("ci-echo/test", "--param", 'steps=["a"]', "--param", "count=1"),
                *("--param", "ratio=1", "--param", "enabled=no", "--param", "label=x"),
            ],
            ["Prefect refused the parameters", "'a' is not of type 'integer'"],
        ),
    ],
)
def test_bad_arguments_exit_2_naming_the_problem(
    prefect_env: dict[str, str], args: list[str], expected: list[str]
) -> None:
    result = ci_run(prefect_env, *args, "--watch-timeout", "30")
    assert result.returncode == 2, result.stdout + result.stderr
    for text in expected:
        assert text in result.stderr
    assert "Started flow run" not in result.stdout


if __name__ == "__main__":
    serve_test_flows()
