"""Each install profile runs what is meant to run on it, in a fresh venv.

- The core install (`pip install -c constraints.txt -e .`, no extra) runs the light CLI
  commands, and a command that needs an extra exits with one line naming it.
- Every Azure DevOps pipeline job, installed exactly as its own `pip install` step does,
  runs its other script steps. What needs Azure DevOps or a Prefect server is replaced:
  the Prefect API is a closed port on loopback, so `deployments.ci_run` and
  `modelferry approve` run their real code up to the first request and must fail on the
  connection (not on an import); the unit tests are collected (every test module imported)
  rather than run. ruff and mypy run as they are.

One venv per distinct install line; pip's cache makes the downloads free after the first.
"""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.devops_pipelines import (
    NAMES,
    REPO,
    expand,
    job_name,
    jobs,
    stages,
    steps,
)
from tests.venvs import create_venv

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]

PIP_INSTALL = ["python", "-m", "pip", "install"]
# `deployments.ci_run` exits 4 when the Prefect API cannot be reached, `modelferry` 1.
EXIT_CI_RUN_API = 4
EXIT_CLI_FAILED = 1
UNREACHABLE = "cannot reach the Prefect API"


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _environment(venv: Path, home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a step on an agent: the venv's scripts first on PATH."""
    env = {k: v for k, v in os.environ.items() if k not in {"VIRTUAL_ENV", "PYTHONPATH"}}
    env |= {
        "PATH": f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        "PREFECT_HOME": str(home / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "GIT_PYTHON_REFRESH": "quiet",
        # mypy's cache of another install would hide what this one lacks.
        "MYPY_CACHE_DIR": str(home / "mypy-cache"),
    }
    return env | (extra or {})


def _run(
    command: str | list[str], env: dict[str, str], timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run a step's script with bash, as an Ubuntu agent does, from the repository root."""
    argv = ["bash", "-c", command] if isinstance(command, str) else command
    return subprocess.run(
        argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


# -- the core install ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def core_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the project and no extra, as the README's core install."""
    folder = tmp_path_factory.mktemp("core") / "venv"
    return create_venv(folder, ["-c", "constraints.txt", "-e", "."])


def _modelferry(venv: Path, tmp_path: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return _run([str(venv / "bin" / "modelferry"), *argv], _environment(venv, tmp_path))


def test_the_core_install_holds_no_orchestrator_library(core_venv: Path) -> None:
    listed = subprocess.run(
        [str(core_venv / "bin" / "python"), "-m", "pip", "list", "--format=freeze"],
        capture_output=True, text=True, check=True,
    ).stdout.lower()  # fmt: skip
    installed = {line.split("==")[0] for line in listed.splitlines()}
    assert "modelferry" in installed
    assert not installed & {"prefect", "mlflow", "pandas", "scikit-learn", "lightgbm"}


def test_core_help(core_venv: Path, tmp_path: Path) -> None:
    done = _modelferry(core_venv, tmp_path, "--help")
    assert done.returncode == 0, done.stderr
    assert "validate" in done.stdout
    assert "endpoints" in done.stdout


def test_core_validate(core_venv: Path, tmp_path: Path) -> None:
    done = _modelferry(core_venv, tmp_path, "validate", "config/model_config.json")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("config/model_config.json: OK: model 'breast-cancer-classifier'")
    assert done.stderr == ""


def test_core_endpoints_list(core_venv: Path, tmp_path: Path) -> None:
    home = tmp_path / "endpoints"
    done = _modelferry(core_venv, tmp_path, "endpoints", "list", "--home", str(home))
    assert done.returncode == 0, done.stderr
    assert done.stdout == "No local endpoints.\n"
    assert done.stderr == ""


def test_core_command_that_needs_an_extra_names_it_in_one_line(
    core_venv: Path, tmp_path: Path
) -> None:
    done = _modelferry(
        core_venv, tmp_path, "endpoints", "list", "--backend", "azureml",
        "--subscription-id", "sub", "--resource-group", "rg", "--workspace", "ws",
    )  # fmt: skip
    assert done.returncode == EXIT_CLI_FAILED
    assert "Traceback" not in done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith("modelferry: error: ")
    assert "pip install 'modelferry[azure]'" in line


@pytest.mark.parametrize("argv", [["pending"], ["approve", "0d4c", "--reviewer", "alice"]])
def test_core_approval_commands_name_the_approval_extra(
    core_venv: Path, tmp_path: Path, argv: list[str]
) -> None:
    api_url = f"http://127.0.0.1:{_closed_port()}/api"
    done = _modelferry(core_venv, tmp_path, *argv, "--api-url", api_url)
    assert done.returncode == EXIT_CLI_FAILED
    assert "Traceback" not in done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"modelferry: error: modelferry {argv[0]} needs the 'approval' extra")
    assert "pip install 'modelferry[approval]'" in line


# -- the Azure DevOps pipelines ----------------------------------------------------------


@dataclass(frozen=True)
class PipelineJob:
    """One agent job of a pipeline: how it installs, and the script steps after that."""

    pipeline: str
    stage: str
    job: dict[str, Any]
    install: tuple[str, ...]
    scripts: tuple[dict[str, Any], ...]

    @property
    def id(self) -> str:
        return f"{self.pipeline}/{self.stage}/{job_name(self.job)}"


def _pipeline_jobs() -> list[PipelineJob]:
    found = []
    for name in NAMES:
        for stage in stages(name):
            for job in jobs(stage):
                scripts = [step for step in steps(job) if "script" in step]
                if not scripts:
                    continue  # An agentless job (ManualValidation): nothing runs on an agent.
                install = shlex.split(expand(scripts[0]["script"], name, job))
                assert install[:4] == PIP_INSTALL, f"{name}: a job's first script installs"
                found.append(
                    PipelineJob(name, stage["stage"], job, tuple(install[4:]), tuple(scripts[1:]))
                )
    return found


PIPELINE_JOBS = _pipeline_jobs()


@pytest.fixture(scope="module")
def pipeline_venvs(
    tmp_path_factory: pytest.TempPathFactory,
) -> Callable[[tuple[str, ...]], Path]:
    """A fresh venv per distinct `pip install` line of the pipelines, built on first use."""
    built: dict[tuple[str, ...], Path] = {}

    def venv_for(install: tuple[str, ...]) -> Path:
        if install not in built:
            folder = tmp_path_factory.mktemp("pipeline") / "venv"
            built[install] = create_venv(folder, install)
        return built[install]

    return venv_for


@dataclass(frozen=True)
class Rehearsal:
    """What runs in place of a script step here, and how it must end."""

    command: str
    exit_code: int
    says: str = ""


def _rehearsal(command: str) -> Rehearsal:
    """The non-network part of a step: the step itself where it needs no service."""
    words = shlex.split(command)
    if words[:3] == ["python", "-m", "deployments.ci_run"]:
        return Rehearsal(command, EXIT_CI_RUN_API, UNREACHABLE)
    if words[:2] == ["modelferry", "approve"]:
        return Rehearsal(command, EXIT_CLI_FAILED, UNREACHABLE)
    if words[:3] == ["python", "-m", "pytest"]:
        # Collecting imports every test module; running them is the unit suite's job.
        paths = [w for w in words[3:] if not w.startswith("-")]
        collect = ["python", "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"]
        return Rehearsal(shlex.join([*collect, *paths]), 0, "collected")
    if words[0] in {"ruff", "mypy"}:
        return Rehearsal(command, 0)
    pytest.fail(f"no rehearsal for the pipeline step {command!r}: add one to this test")


@pytest.mark.parametrize("job", PIPELINE_JOBS, ids=lambda job: job.id)
def test_pipeline_job_runs_its_steps_on_what_it_installs(
    job: PipelineJob, pipeline_venvs: Callable[[tuple[str, ...]], Path], tmp_path: Path
) -> None:
    venv = pipeline_venvs(job.install)
    api_url = f"http://127.0.0.1:{_closed_port()}/api"
    for step in job.scripts:
        command = expand(step["script"], job.pipeline, job.job)
        env = {k: expand(str(v), job.pipeline, job.job) for k, v in (step.get("env") or {}).items()}
        if "PREFECT_API_URL" in env:
            env["PREFECT_API_URL"] = api_url
        rehearsal = _rehearsal(command)
        done = _run(rehearsal.command, _environment(venv, tmp_path, env))
        shown = f"{job.id}: {rehearsal.command}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        assert "Traceback" not in done.stderr, shown
        assert done.returncode == rehearsal.exit_code, shown
        assert rehearsal.says in done.stdout + done.stderr, shown
