"""A local endpoint's recorded pid is acted on only while it still names the server.

After the server exits, or the machine reboots, its pid goes to another process; that
process must never be signalled, and the endpoint must read as stopped. Real processes
throughout: an unrelated `sleep`, and real endpoint servers.
"""

from __future__ import annotations

import logging
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from pydantic import SecretStr

from modelferry.endpoints.local import LocalEndpointBackend
from modelferry.endpoints.local.state import DeploymentRecord, EndpointRecord
from modelferry.endpoints.spec import EndpointSpec, TrafficSplit
from modelferry.registry import TrackingSettings

ENDPOINT = "bc"
LOGGER = "modelferry.endpoints.local.process"
SCHEMA_WITHOUT_START_TIMES = """
CREATE TABLE endpoints (
    name TEXT PRIMARY KEY, port INTEGER NOT NULL, pid INTEGER, scoring_key TEXT NOT NULL,
    admin_token TEXT NOT NULL, description TEXT NOT NULL DEFAULT '',
    tags TEXT NOT NULL DEFAULT '{}', weights TEXT NOT NULL DEFAULT '{}',
    mirror TEXT NOT NULL DEFAULT '{}', tracking_uri TEXT NOT NULL, registry_uri TEXT,
    pending_releases TEXT
);
CREATE TABLE deployments (
    endpoint TEXT NOT NULL REFERENCES endpoints(name) ON DELETE CASCADE, name TEXT NOT NULL,
    model_name TEXT NOT NULL, model_version TEXT NOT NULL, status TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '', PRIMARY KEY (endpoint, name)
);
"""


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[LocalEndpointBackend]:
    backend = LocalEndpointBackend(
        tmp_path / "endpoints", TrackingSettings(f"sqlite:///{tmp_path / 'mlflow.db'}")
    )
    yield backend
    for state in backend.list_endpoints():
        backend.delete_endpoint(state.name)


@pytest.fixture
def unrelated() -> Iterator[subprocess.Popen[bytes]]:
    """A process that is no endpoint server; it gets the old server's pid."""
    sleeper = subprocess.Popen(["sleep", "60"])
    yield sleeper
    sleeper.kill()
    sleeper.wait()


def record_as_server(backend: LocalEndpointBackend, pid: int, started_at: float | None) -> None:
    """Record `pid` as the endpoint's server, with a deployment ready while it ran."""
    backend.store.put_endpoint(
        EndpointRecord(
            name=ENDPOINT,
            port=8000,
            pid=pid,
            scoring_key=SecretStr("key"),
            admin_token=SecretStr("token"),
            description="",
            tags={},
            traffic=TrafficSplit({"blue": 100}),
            tracking_uri=backend.settings.tracking_uri,
            registry_uri=None,
            pid_started_at=started_at,
        )
    )
    backend.store.put_deployment(DeploymentRecord(ENDPOINT, "blue", "bc-model", "1", "ready"))


def forget_start_time(backend: LocalEndpointBackend) -> None:
    """Make the endpoint's row look like one written before start times were kept."""
    with sqlite3.connect(backend.store.path) as db:
        db.execute("UPDATE endpoints SET pid_started_at = NULL WHERE name = ?", (ENDPOINT,))


def test_a_process_that_took_the_servers_pid_is_left_alone(
    backend: LocalEndpointBackend,
    unrelated: subprocess.Popen[bytes],
    caplog: pytest.LogCaptureFixture,
) -> None:
    started = psutil.Process(unrelated.pid).create_time()
    # The server that had this pid started an hour earlier (before a reboot, say).
    record_as_server(backend, unrelated.pid, started - 3600)
    with caplog.at_level(logging.WARNING, LOGGER):
        assert backend.get_endpoint(ENDPOINT).deployments[0].status == "stopped"
        backend.delete_endpoint(ENDPOINT)
    assert unrelated.poll() is None, "the unrelated process was signalled"
    assert backend.store.get_endpoint(ENDPOINT) is None
    assert f"pid {unrelated.pid} now belongs to a process started" in caplog.text


def test_a_record_without_a_start_time_never_signals_another_program(
    tmp_path: Path, unrelated: subprocess.Popen[bytes], caplog: pytest.LogCaptureFixture
) -> None:
    home = tmp_path / "endpoints"
    home.mkdir()
    # A state file from before start times were kept, naming the pid its server had.
    with sqlite3.connect(home / "endpoints.db") as db:
        db.executescript(SCHEMA_WITHOUT_START_TIMES)
        db.execute(
            "INSERT INTO endpoints (name, port, pid, scoring_key, admin_token, weights, "
            "tracking_uri) VALUES (?, 8000, ?, 'key', 'token', '{\"blue\": 100}', 'file:///m')",
            (ENDPOINT, unrelated.pid),
        )
        db.execute(
            "INSERT INTO deployments VALUES (?, 'blue', 'bc-model', '1', 'ready', '')",
            (ENDPOINT,),
        )
    backend = LocalEndpointBackend(home, TrackingSettings("file:///m"))
    with caplog.at_level(logging.WARNING, LOGGER):
        assert backend.get_endpoint(ENDPOINT).deployments[0].status == "stopped"
        backend.delete_endpoint(ENDPOINT)
    assert unrelated.poll() is None, "the unrelated process was signalled"
    assert f"pid {unrelated.pid} now runs something else" in caplog.text


def test_a_server_recorded_with_its_start_time_is_stopped(
    backend: LocalEndpointBackend,
) -> None:
    backend.create_or_update_endpoint(EndpointSpec(ENDPOINT))
    record = backend.store.get_endpoint(ENDPOINT)
    assert record is not None
    assert record.pid is not None
    server = psutil.Process(record.pid)
    assert record.pid_started_at == server.create_time()
    assert "modelferry.endpoints.local.server" in server.cmdline()
    backend.delete_endpoint(ENDPOINT)
    assert not psutil.pid_exists(record.pid)


def test_a_server_recorded_before_start_times_were_kept_is_known_by_its_command(
    backend: LocalEndpointBackend,
) -> None:
    backend.create_or_update_endpoint(EndpointSpec(ENDPOINT))
    record = backend.store.get_endpoint(ENDPOINT)
    assert record is not None
    assert record.pid is not None
    forget_start_time(backend)
    # Still running: ensure_running keeps it rather than starting a second server.
    backend.ensure_running(ENDPOINT)
    assert backend.store.get_endpoint(ENDPOINT).pid == record.pid  # type: ignore[union-attr]
    backend.delete_endpoint(ENDPOINT)
    assert not psutil.pid_exists(record.pid)
