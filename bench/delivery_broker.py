"""A private Mosquitto for the delivery benchmark, configured for a thousand clients.

Mosquitto's defaults suit a few clients: at most 1,000 queued QoS 1 messages per client
(the rest are dropped without a word) and 20 in flight. The cloud channel is one client
that receives every device's events, so a fleet of 1,000 devices overflows that queue
whenever the orchestrator falls behind for a moment. The benchmark raises both bounds and
the process's open-file limit (one descriptor per client).
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

from bench.processes import HOST, free_port

#: Per-client bounds: large enough that nothing is dropped, still finite.
MAX_QUEUED_MESSAGES = 1_000_000
MAX_INFLIGHT_MESSAGES = 1_000


def mosquitto_binary() -> str:
    """The `mosquitto` executable (Debian installs it in /usr/sbin, often not on PATH)."""
    found = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin")
    if found is None:
        raise RuntimeError("mosquitto is not installed: apt-get install mosquitto")
    return found


def mosquitto_version() -> str:
    """`mosquitto version X.Y.Z` as the binary prints it."""
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


class BenchBroker:
    """One `mosquitto` on a free loopback port, its config, data and log in `folder`."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.host = HOST
        self.port = free_port()
        self.log = folder / "mosquitto.log"
        self.config = folder / "mosquitto.conf"
        self._process: subprocess.Popen[bytes] | None = None

    def config_text(self) -> str:
        """The benchmark's broker configuration."""
        lines = [
            # Run as root, Mosquitto would switch to the `mosquitto` user and lose the folder.
            "user root" if os.geteuid() == 0 else "",
            f"listener {self.port} {self.host}",
            "allow_anonymous true",
            "persistence true",
            f"persistence_location {self.folder}/",
            f"max_queued_messages {MAX_QUEUED_MESSAGES}",
            "max_queued_bytes 0",
            f"max_inflight_messages {MAX_INFLIGHT_MESSAGES}",
            "set_tcp_nodelay true",
            f"log_dest file {self.log}",
            "log_type error",
            "log_type warning",
            "log_type notice",
        ]
        return "\n".join(line for line in lines if line) + "\n"

    def start(self, timeout_s: float = 10.0) -> None:
        """Start the broker and wait until it accepts connections."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self.config.write_text(self.config_text())
        with (self.folder / "stderr.log").open("ab") as stderr:
            self._process = subprocess.Popen(
                [mosquitto_binary(), "-c", str(self.config)],
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                preexec_fn=_raise_file_limit,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"mosquitto exited at start; see {self.folder}/stderr.log")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"mosquitto did not listen on {self.port} within {timeout_s:g} s")

    @property
    def pid(self) -> int | None:
        """The broker's process id while it runs."""
        return self._process.pid if self._process is not None else None

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop with SIGTERM and wait; kill if it does not exit. Safe to call twice."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

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
