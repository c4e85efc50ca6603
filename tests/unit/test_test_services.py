"""scripts/test_services.py: what the suite needs is checked before it runs; without root
nothing is installed and each missing thing is one line naming the command that installs it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "test_services.py"
# The script runs before the project's venv exists: under the system Python.
SYSTEM_PYTHON = Path("/usr/bin/python3")
PRETEND = "MODELFERRY_TEST_SERVICES_MISSING"


def _run_unprivileged(environment: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run the script as a user who is not root (as `nobody` when the tests run as root)."""
    if os.geteuid() != 0:
        command = [sys.executable, str(SCRIPT)]
    else:
        setpriv = shutil.which("setpriv")
        if setpriv is None or not SYSTEM_PYTHON.exists():
            pytest.skip("running as root without setpriv or /usr/bin/python3 to drop root")
        command = [
            setpriv,
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            str(SYSTEM_PYTHON),
            str(SCRIPT),
        ]
    return subprocess.run(
        command, env=environment, capture_output=True, text=True, timeout=60, check=False
    )


def _lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line]


def test_without_root_a_binary_missing_from_path_stops_with_one_line() -> None:
    # A PATH holding everything the script looks up there but Node.js.
    with tempfile.TemporaryDirectory() as folder:
        bin_dir = Path(folder)
        bin_dir.chmod(0o755)  # readable by `nobody`
        for name in ("npm", "pg_ctlcluster", "mosquitto", "nats-server"):
            found = shutil.which(name) or shutil.which(name, path="/usr/sbin")
            assert found is not None, f"{name} is not installed"
            (bin_dir / name).symlink_to(found)

        result = _run_unprivileged({"PATH": str(bin_dir)})

    assert result.returncode == 1
    assert result.stdout == ""
    assert _lines(result.stderr) == [
        "missing node (Node.js, which runs Azurite): as root, apt-get install -y nodejs"
    ]
    # Nothing was attempted: no apt, no npm, no "installing ..." progress lines.
    assert "test-services:" not in result.stderr


def test_each_missing_thing_is_one_line_naming_its_install_command() -> None:
    names = "chromium,chromedriver,mosquitto,nats-server,npm,azurite"
    result = _run_unprivileged({"PATH": os.environ["PATH"], PRETEND: names})

    assert result.returncode == 1
    lines = _lines(result.stderr)
    expected = {
        "chromium": "apt-get install -y chromium",
        "chromedriver": "apt-get install -y chromium-driver",
        "mosquitto": "apt-get install -y mosquitto",
        "nats-server": "apt-get install -y nats-server",
        "npm": "apt-get install -y npm",
        "Azurite": "python3 tests/azurite.py",
    }
    for name, command in expected.items():
        [line] = [line for line in lines if line.startswith(f"missing {name} ")]
        assert line.endswith(command)
    # Only what was pretended missing is listed (this machine has the rest).
    assert len(lines) == len(expected)


def test_check_only_reports_even_as_root() -> None:
    if not SYSTEM_PYTHON.exists():
        pytest.skip("no /usr/bin/python3")
    result = subprocess.run(
        [str(SYSTEM_PYTHON), str(SCRIPT), "--check"],
        env={"PATH": os.environ["PATH"], PRETEND: "nats-server"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 1
    assert _lines(result.stderr) == [
        "missing nats-server (the NATS server the streaming tests start): as root, "
        "apt-get install -y nats-server"
    ]
