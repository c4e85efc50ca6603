"""Entry points switch vendor telemetry off unless the user switched it on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from modelferry.telemetry_opt_out import TELEMETRY_DEFAULTS

_ROOT = Path(__file__).resolve().parents[2]

_PROBE = """
import json, os, sys
{entry}
print(json.dumps({{name: os.environ.get(name) for name in {names!r}}}))
"""


def _environment_after(entry: str, extra: dict[str, str]) -> dict[str, str | None]:
    env = {k: v for k, v in os.environ.items() if k not in TELEMETRY_DEFAULTS}
    env.update(extra)
    done = subprocess.run(
        [sys.executable, "-c", _PROBE.format(entry=entry, names=list(TELEMETRY_DEFAULTS))],
        cwd=_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result: dict[str, str | None] = json.loads(done.stdout.splitlines()[-1])
    return result


@pytest.mark.parametrize(
    "entry",
    [
        "import flows",
        "import deployments",
        "from modelferry.cli import main; main(['--version'])",
    ],
)
def test_entry_points_turn_telemetry_off(entry: str) -> None:
    assert _environment_after(entry, {}) == TELEMETRY_DEFAULTS


def test_a_users_own_setting_wins() -> None:
    seen = _environment_after("import flows", {"MLFLOW_DISABLE_TELEMETRY": "false"})
    assert seen["MLFLOW_DISABLE_TELEMETRY"] == "false"
    assert seen["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
