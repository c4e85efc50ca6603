"""A private Mosquitto broker for tests and benchmarks, never the machine's broker on 1883.

Stands in for nothing: it is the real broker, started on a free loopback port with a
config and data folder of its own, so MQTT delivery can be tested end to end:

    with Mosquitto(tmp_path) as broker:        # listens on 127.0.0.1:<free port>
        ...broker.port...
        broker.restart()                       # same port, sessions and queued messages kept

The broker persists its sessions and queued QoS 1 messages in its folder and is stopped
with SIGTERM, on which Mosquitto saves them; a restart therefore keeps them, as a real
broker with `persistence true` does.

Mosquitto's defaults suit a few clients: at most 1,000 queued QoS 1 messages per client
(the rest are dropped without a word) and 20 in flight. For a fleet of a thousand
clients, raise them with `extra_config` (see `MANY_CLIENTS_CONFIG`) and the open-file
limit with `raise_file_limit=True` (one descriptor per client); `dropped_messages()`
then says whether the broker dropped anything anyway.

Needs the `mosquitto` executable (`apt-get install mosquitto`).
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Self

__all__ = ["MANY_CLIENTS_CONFIG", "Mosquitto", "free_port", "mosquitto_binary", "mosquitto_version"]

HOST = "127.0.0.1"

#: Per-client bounds for a fleet of clients: large enough that nothing is dropped, still finite.
MANY_CLIENTS_CONFIG = "\n".join(
    [
        "max_queued_messages 1000000",
        "max_queued_bytes 0",
        "max_inflight_messages 1000",
        "set_tcp_nodelay true",
    ]
)


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def mosquitto_binary() -> str:
    """The `mosquitto` executable (Debian installs it in /usr/sbin, often not on PATH).

    Raises:
        RuntimeError: Mosquitto is not installed.
    """
    found = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin")
    if found is None:
        raise RuntimeError("mosquitto is not installed: apt-get install mosquitto")
    return found


def mosquitto_version() -> str:
    """`X.Y.Z` of `mosquitto version X.Y.Z` as the binary prints it, or "unknown"."""
    try:
        result = subprocess.run(
            [mosquitto_binary(), "-h"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, RuntimeError, subprocess.TimeoutExpired):
        return "unknown"
    first = (result.stdout or result.stderr).strip().splitlines()
    return first[0].removeprefix("mosquitto version ").strip() if first else "unknown"


def _raise_file_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Mosquitto:
    """One `mosquitto` process on a free port with a config and data folder of its own."""

    def __init__(
        self,
        folder: Path,
        *,
        port: int | None = None,
        allow_anonymous: bool = True,
        extra_config: str = "",
        raise_file_limit: bool = False,
        new_session: bool = False,
    ) -> None:
        """Write the broker's config in `folder` (made if missing); `start()` runs it.

        Args:
            folder: The broker's config, persistence, and logs.
            port: The port to listen on; default a free one.
            allow_anonymous: Whether clients may connect without a user name.
            extra_config: Lines after the listener's, so listener options (TLS) go there.
            raise_file_limit: Start the broker with its open-file limit at the hard limit.
            new_session: Start the broker in a session of its own, out of reach of a
                Ctrl-C meant for the caller (which then stops it itself).
        """
        self.folder = folder
        self.host = HOST
        self.port = port or free_port()
        self.log = folder / "mosquitto.log"
        self.config = folder / "mosquitto.conf"
        self._raise_file_limit = raise_file_limit
        self._new_session = new_session
        lines = [
            # Run as root, Mosquitto would switch to the `mosquitto` user and lose the folder.
            "user root" if os.geteuid() == 0 else "",
            f"listener {self.port} {self.host}",
            f"allow_anonymous {'true' if allow_anonymous else 'false'}",
            "persistence true",
            f"persistence_location {folder}/",
            f"log_dest file {self.log}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            extra_config,
        ]
        folder.mkdir(parents=True, exist_ok=True)
        self.config.write_text("\n".join(line for line in lines if line) + "\n")
        self._process: subprocess.Popen[bytes] | None = None

    @staticmethod
    def binary() -> str:
        """The `mosquitto` executable; see `mosquitto_binary`."""
        return mosquitto_binary()

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        """The broker's process id while it runs."""
        return self._process.pid if self._process is not None else None

    def start(self, timeout_s: float = 10.0) -> None:
        """Start the broker and wait until it accepts connections."""
        if self.running:
            return
        # A file, not a pipe: nobody reads a pipe while the broker runs, and a full one blocks it.
        with (self.folder / "stderr.log").open("ab") as stderr:
            self._process = subprocess.Popen(
                [self.binary(), "-c", str(self.config)],
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                preexec_fn=_raise_file_limit if self._raise_file_limit else None,
                start_new_session=self._new_session,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"mosquitto exited at start:\n{self._output()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"mosquitto did not listen on {self.port} in {timeout_s:g} s")

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop with SIGTERM (Mosquitto saves its sessions then) and wait; kill if it hangs.

        Safe to call twice.
        """
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def restart(self) -> None:
        """Stop and start again on the same port, keeping persisted sessions."""
        self.stop()
        self.start()

    def dropped_messages(self) -> list[str]:
        """Log lines in which the broker says it dropped or refused something."""
        if not self.log.exists():
            return []
        words = ("drop", "queue", "out of memory", "refus")
        return [
            line
            for line in self.log.read_text(errors="replace").splitlines()
            if any(word in line.lower() for word in words)
        ]

    def _output(self) -> str:
        logs = [self.folder / "stderr.log", self.log]
        return "\n".join(path.read_text() for path in logs if path.exists()).strip()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
