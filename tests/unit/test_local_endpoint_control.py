"""The local backend's control of a running server, against a stand-in server: this test
process is recorded as the server (pid and start time), and a small HTTP server answers
its admin routes, so a hung server or a second command can be staged exactly.

Nothing here stops the recorded server: that would signal the test process.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psutil
import pytest
from pydantic import SecretStr

from modelferry.cli import main
from modelferry.endpoints.local import LocalEndpointBackend, process
from modelferry.endpoints.local.state import DeploymentRecord, EndpointRecord
from modelferry.endpoints.spec import TrafficSplit
from modelferry.errors import EndpointNotFoundError
from modelferry.registry import TrackingSettings

ENDPOINT = "bc"
ADMIN_TOKEN = "admin-token-that-must-not-show"


class StandInServer:
    """Answers `POST /admin/reload` as an endpoint server does; `on_reload` runs first."""

    def __init__(self) -> None:
        self.on_reload: Callable[[], None] = lambda: None
        self.reloads = 0
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                stand_in.on_reload()
                stand_in.reloads += 1
                body = json.dumps({"deployments": {"blue": "ready", "green": "ready"}})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body.encode())

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.http.server_address[1])
        self.thread = threading.Thread(target=self.http.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


@pytest.fixture
def server() -> Iterator[StandInServer]:
    stand_in = StandInServer()
    yield stand_in
    stand_in.close()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "endpoints"


def backend_at(home: Path) -> LocalEndpointBackend:
    return LocalEndpointBackend(home, TrackingSettings("file:///nowhere"))


def record_running(backend: LocalEndpointBackend, port: int, traffic: TrafficSplit) -> None:
    """Record this process as the endpoint's running server, listening on `port`."""
    backend.store.put_endpoint(
        EndpointRecord(
            name=ENDPOINT,
            port=port,
            pid=os.getpid(),
            scoring_key=SecretStr("old-key"),
            admin_token=SecretStr(ADMIN_TOKEN),
            description="",
            tags={},
            traffic=traffic,
            tracking_uri="file:///nowhere",
            registry_uri=None,
            pid_started_at=psutil.Process().create_time(),
        )
    )
    for name, version in (("blue", "1"), ("green", "2")):
        backend.store.put_deployment(DeploymentRecord(ENDPOINT, name, "m", version, "ready"))


def cli(home: Path, *argv: str) -> int:
    return main(["endpoints", *argv, "--home", str(home), "--tracking-uri", "file:///nowhere"])


def test_a_server_that_does_not_answer_fails_the_rotation_with_one_line(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    backend = backend_at(home)
    record_running(backend, port=process.free_port(), traffic=TrafficSplit({"blue": 100}))
    assert cli(home, "key", ENDPOINT, "--rotate") == 1
    out, err = capsys.readouterr()
    new_key = backend.get_keys(ENDPOINT).get_secret_value()
    assert new_key != "old-key"
    assert out == ""
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert f"endpoint {ENDPOINT!r} has a new scoring key, but its server did not confirm" in err
    assert f"modelferry endpoints logs {ENDPOINT}" in err
    assert f"`modelferry endpoints key {ENDPOINT}` prints the new key" in err
    assert new_key not in err
    assert ADMIN_TOKEN not in err


def test_a_rotation_overtaken_by_another_does_not_print_its_refused_key(
    home: Path, server: StandInServer, capsys: pytest.CaptureFixture[str]
) -> None:
    backend = backend_at(home)
    record_running(backend, server.port, TrafficSplit({"blue": 100}))
    # A second `endpoints key --rotate` stores its key while this one's reload runs.
    server.on_reload = lambda: backend.store.set_scoring_key(ENDPOINT, SecretStr("second"))
    assert cli(home, "key", ENDPOINT, "--rotate") == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert "its scoring key was rotated again meanwhile, by another command" in err
    assert backend.get_keys(ENDPOINT).get_secret_value() == "second"
    server.on_reload = lambda: None
    assert cli(home, "key", ENDPOINT, "--rotate") == 0
    assert capsys.readouterr().out == backend.get_keys(ENDPOINT).get_secret_value() + "\n"


def test_two_rollbacks_at_once_undo_one_change_each(home: Path, server: StandInServer) -> None:
    backend = backend_at(home)
    record_running(backend, server.port, TrafficSplit({"blue": 100}))
    splits = [{"blue": 90, "green": 10}, {"blue": 50, "green": 50}, {"green": 100}]
    for weights in splits:
        backend.set_traffic(ENDPOINT, TrafficSplit(weights))
    # Each reload takes a while: the second rollback starts while the first one runs.
    server.on_reload = lambda: time.sleep(0.3)
    errors: list[BaseException] = []

    def roll_back() -> None:
        try:
            # Each command opens the state itself, as two `endpoints rollback` would.
            backend_at(home).rollback_traffic(ENDPOINT, steps=1)
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=roll_back) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    assert dict(backend.get_endpoint(ENDPOINT).traffic.weights) == splits[0]
    history = backend.store.traffic_history(ENDPOINT)
    assert [dict(change.replaced.weights) for change in history] == [{"blue": 100}]


def test_deleting_an_endpoint_while_its_traffic_moves_leaves_no_history_behind(
    home: Path, server: StandInServer
) -> None:
    backend = backend_at(home)
    record_running(backend, server.port, TrafficSplit({"blue": 100}))
    # The recorded server is a process of its own here: deleting the endpoint stops it.
    stand_in = subprocess.Popen(["sleep", "60"])
    try:
        with sqlite3.connect(backend.store.path) as db:
            db.execute(
                "UPDATE endpoints SET pid = ?, pid_started_at = ?",
                (stand_in.pid, psutil.Process(stand_in.pid).create_time()),
            )
        server.on_reload = lambda: time.sleep(0.5)
        moving = threading.Thread(
            target=lambda: suppress_not_found(
                lambda: backend.set_traffic(ENDPOINT, TrafficSplit({"green": 100}))
            )
        )
        moving.start()
        time.sleep(0.2)  # the traffic change waits for its reload
        backend_at(home).delete_endpoint(ENDPOINT)
        moving.join(timeout=30)
        assert stand_in.wait(timeout=10) is not None
    finally:
        stand_in.kill()
        stand_in.wait()
    assert backend.store.get_endpoint(ENDPOINT) is None
    assert backend.store.traffic_history(ENDPOINT) == []


def suppress_not_found(action: Callable[[], object]) -> None:
    """Run `action`; the endpoint may be gone by the time it answers."""
    with contextlib.suppress(EndpointNotFoundError):
        action()
