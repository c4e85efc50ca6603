"""Every way modelferry runs flows tells Prefect to send the library's logs to the run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from flows.library_logs import (
    EXTRA_LOGGERS_ENV,
    LIBRARY_LOGGER,
    MISSING_RUN_ENV,
    send_library_logs_to_runs,
)

REPO = Path(__file__).resolve().parents[2]

# What Prefect made of the environment once imported after `entry`; a library warning
# outside any run must not raise Prefect's "no flow run id" warning (`-W error`).
_PROBE = """
import json, logging
{entry}
from prefect import flow  # sets up logging, as a flow module does
from prefect.logging.handlers import APILogHandler
from prefect.settings import get_current_settings
logging.getLogger("modelferry.probe").warning("logged outside any run")
settings = get_current_settings().logging
print(json.dumps({{
    "extra_loggers": sorted(settings.extra_loggers or []),
    "when_missing_flow": settings.to_api.when_missing_flow,
    "to_api": any(isinstance(h, APILogHandler) for h in logging.getLogger("modelferry").handlers),
}}))
"""


def _clean_env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (EXTRA_LOGGERS_ENV, MISSING_RUN_ENV)}
    return env | values


def _prefect_logging_after(entry: str, *, strict: bool = True, **values: str) -> dict[str, Any]:
    """Run the probe after `entry`; `strict`: with warnings as errors."""
    flags = ["-W", "error"] if strict else []
    done = subprocess.run(
        [sys.executable, *flags, "-c", _PROBE.format(entry=entry)],
        cwd=REPO,
        env=_clean_env(**values),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


@pytest.mark.parametrize("entry", ["import flows", "import deployments.serve"])
def test_entry_points_send_the_library_logs_to_the_run(entry: str) -> None:
    assert _prefect_logging_after(entry) == {
        "extra_loggers": [LIBRARY_LOGGER],
        "when_missing_flow": "ignore",
        "to_api": True,
    }


def test_without_an_entry_point_prefect_leaves_the_library_logs_on_the_console() -> None:
    """What the entry points change: Prefect alone attaches no handler to the library."""
    seen = _prefect_logging_after("", **{MISSING_RUN_ENV: "ignore"})
    assert (seen["extra_loggers"], seen["to_api"]) == ([], False)


def test_a_users_own_loggers_and_choice_are_kept() -> None:
    mine = {EXTRA_LOGGERS_ENV: "myapp", MISSING_RUN_ENV: "warn"}
    seen = _prefect_logging_after("import flows", strict=False, **mine)
    assert seen["extra_loggers"] == ["modelferry", "myapp"]
    assert seen["when_missing_flow"] == "warn"


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (None, "modelferry"),
        ("", "modelferry"),
        ("myapp", "myapp,modelferry"),
        ("myapp, other,", "myapp,other,modelferry"),
        ("myapp, modelferry", "myapp, modelferry"),  # already listed: left as written
    ],
)
def test_modelferry_is_appended_to_the_list_once(
    before: str | None, after: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if before is None:
        monkeypatch.delenv(EXTRA_LOGGERS_ENV, raising=False)
    else:
        monkeypatch.setenv(EXTRA_LOGGERS_ENV, before)
    monkeypatch.delenv(MISSING_RUN_ENV, raising=False)

    send_library_logs_to_runs()

    assert os.environ[EXTRA_LOGGERS_ENV] == after
    assert os.environ[MISSING_RUN_ENV] == "ignore"


def test_every_prefect_yaml_deployment_sets_them_for_its_work_pool_runs() -> None:
    spec = yaml.safe_load((REPO / "prefect.yaml").read_text(encoding="utf-8"))
    assert spec["deployments"]
    for deployment in spec["deployments"]:
        env = deployment["work_pool"].get("job_variables", {}).get("env", {})
        name = deployment["entrypoint"]
        assert LIBRARY_LOGGER in env.get(EXTRA_LOGGERS_ENV, "").split(","), name
        assert env.get(MISSING_RUN_ENV) == "ignore", name


def _make_environment(**values: str) -> list[str]:
    """The two variables as a recipe of the Makefile (`make demo`, `make serve`) sees them."""
    show = f'show: ; @echo "$${EXTRA_LOGGERS_ENV}" && echo "$${MISSING_RUN_ENV}"'
    done = subprocess.run(
        ["make", "-s", "--no-print-directory", "--eval", show, "show"],
        cwd=REPO,
        env=_clean_env(**values),
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return done.stdout.splitlines()


def test_the_makefile_exports_them_and_keeps_a_users_values() -> None:
    assert _make_environment() == ["modelferry", "ignore"]
    mine = {EXTRA_LOGGERS_ENV: "myapp", MISSING_RUN_ENV: "warn"}
    assert _make_environment(**mine) == ["myapp", "warn"]
