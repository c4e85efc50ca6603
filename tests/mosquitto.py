"""A private Mosquitto broker for tests, so they never touch the machine's broker on 1883.

    with Mosquitto(tmp_path) as broker:        # listens on 127.0.0.1:<free port>
        ...broker.port...
        broker.restart()                       # same port, sessions and queued messages kept

The broker persists its sessions and queued QoS 1 messages in its folder and is stopped
with SIGTERM, on which Mosquitto saves them; a restart therefore keeps them, as a real
broker with `persistence true` does.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Self

import pytest


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Mosquitto:
    """One `mosquitto` process on a free port with a config and data folder of its own."""

    def __init__(
        self,
        folder: Path,
        *,
        port: int | None = None,
        allow_anonymous: bool = True,
        extra_config: str = "",
    ) -> None:
        """`extra_config` follows the listener line, so listener options (TLS) go there."""
        self.folder = folder
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.log = folder / "mosquitto.log"
        self.config = folder / "mosquitto.conf"
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
        self.config.write_text("\n".join(line for line in lines if line) + "\n")
        self._process: subprocess.Popen[bytes] | None = None

    @staticmethod
    def binary() -> str:
        """The `mosquitto` executable (Debian installs it in /usr/sbin, often not on PATH)."""
        found = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin")
        if found is None:
            pytest.fail("mosquitto is not installed: apt-get install mosquitto")
        return found

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self._process is not None and self._process.poll() is None

    def start(self, timeout_s: float = 10.0) -> None:
        """Start the broker and wait until it accepts connections."""
        if self.running:
            return
        # A file, not a pipe: nobody reads a pipe while the broker runs, and a full one blocks it.
        with (self.folder / "stderr.log").open("ab") as stderr:
            self._process = subprocess.Popen(
                [self.binary(), "-c", str(self.config)], stdout=subprocess.DEVNULL, stderr=stderr
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
        raise RuntimeError(f"mosquitto did not listen on {self.port} in {timeout_s} s")

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop with SIGTERM (Mosquitto saves its sessions then) and wait for the exit."""
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
