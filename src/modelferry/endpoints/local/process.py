"""Start, watch and stop endpoint server processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from modelferry.errors import DeploymentFailedError


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def is_alive(pid: int | None) -> bool:
    """Whether a process with this id runs (and is not a zombie of ours)."""
    if pid is None:
        return False
    try:
        finished, _ = os.waitpid(pid, os.WNOHANG)
        if finished == pid:
            return False
    except ChildProcessError:
        pass  # not our child (started by another process): fall through to signal 0
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def start_server(state_db: Path, endpoint: str, host: str, log_path: Path) -> int:
    """Start the endpoint's server process, detached; returns its pid."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "modelferry.endpoints.local.server",
                "--state-db", str(state_db), "--endpoint", endpoint, "--host", host,
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            # Its own session: the endpoint outlives the CLI or flow that started it.
            start_new_session=True,
        )  # fmt: skip
    return process.pid


def wait_until_live(url: str, pid: int, timeout_s: float, log_path: Path) -> None:
    """Block until `GET /health/live` answers, or fail with the end of the server log."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not is_alive(pid):
            raise DeploymentFailedError(
                f"the endpoint server exited during start-up:\n{tail(log_path, 20)}"
            )
        try:
            if httpx.get(f"{url}/health/live", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise DeploymentFailedError(
        f"the endpoint server did not answer within {timeout_s:g} s:\n{tail(log_path, 20)}"
    )


def stop_server(pid: int | None, timeout_s: float = 15.0) -> None:
    """Stop a server gracefully (in-flight requests finish), then forcibly."""
    if not is_alive(pid):
        return
    assert pid is not None
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not is_alive(pid):
            return
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)


def tail(path: Path, lines: int, deployment: str | None = None) -> str:
    """The last `lines` lines of a server log ("" when it does not exist).

    With `deployment`, only the lines about it: they carry `deployment=<name>`.
    """
    if not path.exists():
        return ""
    text = path.read_text(encoding="utf-8", errors="replace").splitlines()
    if deployment is not None:
        wanted = f"deployment={deployment}"
        text = [line for line in text if wanted in line.split()]
    return "\n".join(text[-lines:])
