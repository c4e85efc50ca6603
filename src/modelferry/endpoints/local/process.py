"""Start, watch and stop endpoint server processes.

A recorded pid alone does not name a process: once the server exits, or the machine
reboots, the system hands the number to another process. So a server is recorded with
its start time too, and a process counts as the server (is reported running, and is
signalled) only while the process with that pid has that start time. Records from
before start times were kept have none: for them the process must be running this
module's server for the same endpoint and state file, by its command line; otherwise
the server is gone, and nothing is signalled.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import httpx
import psutil

from modelferry.errors import DeploymentFailedError

logger = logging.getLogger(__name__)

_SERVER_MODULE = "modelferry.endpoints.local.server"
# Start times are computed from the boot time and the process's clock ticks; a clock
# adjustment can shift them a little. A reused pid started at least a tick later, and
# after a reboot, minutes or days apart.
_START_TIME_TOLERANCE_S = 1.0
# `tail` reads a log backwards in blocks of this many bytes.
_TAIL_BLOCK = 64 * 1024


@dataclass(frozen=True)
class ServerProcess:
    """An endpoint's server process as recorded.

    Attributes:
        pid: the process id it was started with.
        started_at: its start time (seconds since the epoch, as `psutil` reports it);
            None for records written before start times were kept.
        endpoint: the endpoint it serves.
        state_db: the state file it reads.
    """

    pid: int
    started_at: float | None
    endpoint: str
    state_db: Path


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def is_alive(server: ServerProcess | None) -> bool:
    """Whether the recorded server runs: its pid is taken by that very process."""
    return _find(server) is not None


def start_server(state_db: Path, endpoint: str, host: str, log_path: Path) -> ServerProcess:
    """Start the endpoint's server process, detached; returns it with its start time."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [
                sys.executable, "-m", _SERVER_MODULE,
                "--state-db", str(state_db), "--endpoint", endpoint, "--host", host,
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            # Its own session: the endpoint outlives the CLI or flow that started it.
            start_new_session=True,
        )  # fmt: skip
    try:
        started_at: float | None = psutil.Process(process.pid).create_time()
    except psutil.NoSuchProcess:
        started_at = None  # gone already: `wait_until_live` reports why, from the log
    return ServerProcess(process.pid, started_at, endpoint, state_db)


def wait_until_live(url: str, server: ServerProcess, timeout_s: float, log_path: Path) -> None:
    """Block until `GET /health/live` answers, or fail with the end of the server log."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not is_alive(server):
            raise DeploymentFailedError(
                f"the endpoint server exited during start-up:\n{tail(log_path, 20)}",
                endpoint=server.endpoint,
            )
        try:
            if httpx.get(f"{url}/health/live", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise DeploymentFailedError(
        f"the endpoint server did not answer within {timeout_s:g} s:\n{tail(log_path, 20)}",
        endpoint=server.endpoint,
    )


def stop_server(server: ServerProcess | None, timeout_s: float = 15.0) -> None:
    """Stop a server gracefully (in-flight requests finish), then forcibly.

    A server that is gone, or whose pid another process has taken, is left alone.
    """
    found = _find(server)
    if found is None:
        return
    # psutil signals only while the pid still belongs to the process found above.
    try:
        found.terminate()
        try:
            found.wait(timeout_s)
        except psutil.TimeoutExpired:
            found.kill()
            found.wait(5.0)
    except psutil.NoSuchProcess:
        pass  # it exited on its own meanwhile


def _find(server: ServerProcess | None) -> psutil.Process | None:
    """The running process that is `server`, or None when it is gone."""
    if server is None:
        return None
    try:
        found = psutil.Process(server.pid)
        if found.status() == psutil.STATUS_ZOMBIE:
            # Exited, not yet collected; a zombie has no command line left to check.
            if server.started_at is not None and _started_at(found, server.started_at):
                _reap(server.pid)
            return None
        if not _is_server(found, server):
            return None
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        # AccessDenied: another user's process, so not a server this user started.
        return None
    return found


def _started_at(found: psutil.Process, started_at: float) -> bool:
    """Whether `found` started at `started_at`, within the tolerance."""
    return abs(found.create_time() - started_at) <= _START_TIME_TOLERANCE_S


def _is_server(found: psutil.Process, server: ServerProcess) -> bool:
    """Whether `found`, the process that has the server's pid now, is the server."""
    if server.started_at is not None:
        if _started_at(found, server.started_at):
            return True
        logger.warning(
            "endpoint %r: its server (pid %d, started %.2f) is gone; pid %d now belongs to "
            "a process started %.2f, which is left alone",
            server.endpoint,
            server.pid,
            server.started_at,
            server.pid,
            found.create_time(),
        )
        return False
    command = found.cmdline()
    expected = ["-m", _SERVER_MODULE, "--state-db", str(server.state_db)]
    expected += ["--endpoint", server.endpoint]
    if any(command[i : i + len(expected)] == expected for i in range(len(command))):
        return True
    logger.warning(
        "endpoint %r: its server (pid %d, no start time recorded) is gone; pid %d now "
        "runs something else, which is left alone",
        server.endpoint,
        server.pid,
        server.pid,
    )
    return False


def _reap(pid: int) -> None:
    """Collect the exit status of a server this process started, so its pid is freed."""
    # One started by another process is collected by that one (or by init).
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def tail(path: Path, lines: int, deployment: str | None = None) -> str:
    """The last `lines` lines of a server log ("" when it does not exist).

    With `deployment`, only the lines about it: they carry `deployment=<name>`. The log
    is read from its end a block at a time, so a long log costs what is shown, not its
    size (with `deployment`, what lies after the last `lines` lines about it).
    """
    wanted = None if deployment is None else f"deployment={deployment}"
    found: list[str] = []
    try:
        log = path.open("rb")
    except FileNotFoundError:
        return ""
    with log:
        for raw in _lines_from_end(log):
            if len(found) >= lines:
                break
            line = raw.decode("utf-8", errors="replace")
            if wanted is None or wanted in line.split():
                found.append(line)
    return "\n".join(reversed(found))


def _lines_from_end(log: BinaryIO) -> Iterator[bytes]:
    """The lines of `log`, last first, without their line ends."""
    end = log.seek(0, os.SEEK_END)
    if end == 0:
        return
    rest = b""
    last_block = True
    while end > 0:
        start = max(0, end - _TAIL_BLOCK)
        log.seek(start)
        block = log.read(end - start) + rest
        end = start
        if last_block:
            block, last_block = block.removesuffix(b"\n"), False
        # The first piece may be the end of a line that began in an earlier block.
        rest, *complete = block.split(b"\n")
        yield from reversed(complete)
    yield rest
