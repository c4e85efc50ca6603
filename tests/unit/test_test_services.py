"""scripts/test_services.py: what the suite needs is checked before it runs; without root
nothing is installed and each missing thing is one line naming the command that installs it.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from types import ModuleType

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


def _lines_but_azurite(stderr: str) -> list[str]:
    """The lines, less Azurite's: a machine where it is not installed yet names it too, and
    that line is `test_each_missing_thing_is_one_line_naming_its_install_command`'s subject."""
    return [line for line in _lines(stderr) if not line.startswith("missing Azurite ")]


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
    assert _lines_but_azurite(result.stderr) == [
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
    assert _lines_but_azurite(result.stderr) == [
        "missing nats-server (the NATS server the streaming tests start): as root, "
        "apt-get install -y nats-server"
    ]


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("test_services_script", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@contextmanager
def _fake_postgres(reply: bytes) -> Iterator[tuple[str, int]]:
    """A listener that reads a startup message and answers `reply`, like a server would."""
    server = socket.create_server(("127.0.0.1", 0))
    received: list[bytes] = []

    def answer() -> None:
        connection, _ = server.accept()
        with connection:
            received.append(connection.recv(1024))
            connection.sendall(reply)
            # The client's Terminate, or its close (a reset when it left bytes unread).
            with suppress(OSError):
                connection.recv(16)

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    try:
        yield server.getsockname()
    finally:
        thread.join(timeout=5)
        server.close()
    # The tests log in as user postgres to database postgres, protocol 3.0.
    assert received[0][4:8] == struct.pack("!i", 196608)
    assert b"user\0postgres\0database\0postgres\0\0" in received[0]


@pytest.mark.parametrize(
    ("reply", "state"),
    [
        (b"R" + struct.pack("!ii", 8, 0), "ok"),
        (
            b"R" + struct.pack("!ii", 8, 10) + b"SCRAM-SHA-256\0\0",
            "asks user postgres for a password; the tests need trust auth for 127.0.0.1",
        ),
        (b"E" + struct.pack("!i", 4), "refused the login of user postgres"),
        (b"HTTP/1.1 400", "answered b'H', not PostgreSQL's login reply"),
    ],
)
def test_postgres_is_asked_for_a_passwordless_login(
    reply: bytes, state: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = _load_script()
    with _fake_postgres(reply) as address:
        monkeypatch.setattr(script, "POSTGRES_ADDRESS", address)
        assert script.postgres_state() == state


def test_postgres_not_listening_is_down(monkeypatch: pytest.MonkeyPatch) -> None:
    script = _load_script()
    with socket.create_server(("127.0.0.1", 0)) as probe:
        address = probe.getsockname()  # free once closed
    monkeypatch.setattr(script, "POSTGRES_ADDRESS", address)

    assert script.postgres_state() == "down"
    [line] = script.problems([], postgres="down", azurite=True)
    assert line.startswith("missing PostgreSQL on 127.0.0.1:5432 (nothing answers): as root, ")
    assert "pg_ctlcluster --skip-systemctl-redirect " in line


def test_as_root_a_failed_apt_get_still_starts_postgres_and_names_what_is_missing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    script = _load_script()
    mosquitto = script.Requirement(
        "mosquitto", "the MQTT broker", lambda: False, packages=("mosquitto",)
    )
    postgres = iter(["down", "down", "ok"])  # checked, before the start, after it
    started: list[str] = []

    def apt_fails(packages: list[str]) -> None:
        raise subprocess.CalledProcessError(100, ["apt-get", "install", *packages])

    monkeypatch.setattr(script.os, "geteuid", lambda: 0)
    monkeypatch.setattr(script, "missing_requirements", lambda: [mosquitto])
    monkeypatch.setattr(script, "postgres_state", lambda: next(postgres))
    monkeypatch.setattr(script, "_azurite_ready", lambda: True)
    monkeypatch.setattr(script, "_azurite_present", lambda: True)
    monkeypatch.setattr(script, "_apt_install", apt_fails)
    monkeypatch.setattr(script, "_start_postgres", lambda: started.append("postgres"))

    assert script.main([]) == 1

    assert started == ["postgres"]
    lines = _lines(capsys.readouterr().err)
    assert any(line.startswith("test-services: failed: Command '['apt-get'") for line in lines)
    assert lines[-1].startswith("missing mosquitto (the MQTT broker): as root, apt-get install")
    assert not any("PostgreSQL" in line for line in lines)
