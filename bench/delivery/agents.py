"""The simulated devices: `modelferry agent` processes, many devices each, over MQTT.

Each process is the real command line (`modelferry agent --transport mqtt
--device-ids-file FILE`): its agents share one event loop, one HTTP client and one smoke
runner, which smoke-tests a package once per process (by manifest digest) however many of
its devices receive it. A process says "... connected" on its log once every one of its
agents has connected to the broker.

The smoke prediction runs under `--smoke-python`, the device's model environment. A
device installs the package's `requirements.txt` (the model's own libraries), not MLflow,
so its `score.py` loads the model without MLflow. This repository's venv holds MLflow,
whose import alone costs a few CPU-seconds per smoke run; `device_python` writes an
interpreter wrapper in which MLflow cannot be imported, as on a device.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from bench.common.processes import REPO
from modelferry.testing.mosquitto import Mosquitto

_CONNECTED = "connected"


def split_devices(devices: Sequence[str], processes: int) -> list[list[str]]:
    """`devices` dealt round-robin over `processes` lists (the empty ones dropped)."""
    groups: list[list[str]] = [[] for _ in range(max(processes, 1))]
    for index, device in enumerate(devices):
        groups[index % len(groups)].append(device)
    return [group for group in groups if group]


def device_python(folder: Path) -> Path:
    """A `python` for the smoke prediction that cannot import MLflow, as on a device."""
    hidden = folder / "without-mlflow" / "mlflow"
    hidden.mkdir(parents=True, exist_ok=True)
    (hidden / "__init__.py").write_text(
        'raise ModuleNotFoundError("No module named \'mlflow\'", name="mlflow")\n'
    )
    wrapper = folder / "python"
    wrapper.write_text(
        "#!/bin/sh\n"
        "# The device's model environment: the package's requirements, no MLflow.\n"
        f'PYTHONPATH="{hidden.parent}" exec "{sys.executable}" "$@"\n'
    )
    wrapper.chmod(0o755)
    return wrapper


class AgentProcesses:
    """Starts one `modelferry agent` per device group; stops them all with SIGTERM.

    Args:
        folder: where each process keeps its device roots, device list and log.
        groups: the device ids of each process.
        broker: the broker the agents connect to.
        public_key: the key packages are verified with (the agents' `--public-key`).
        smoke_python: the Python the agents run smoke predictions with (default: theirs).
    """

    def __init__(
        self,
        folder: Path,
        groups: Sequence[Sequence[str]],
        broker: Mosquitto,
        public_key: str,
        smoke_python: Path | None = None,
    ) -> None:
        self.folder = folder
        self.groups = [list(group) for group in groups]
        self._process_of = {device: n for n, group in enumerate(self.groups) for device in group}
        self.broker = broker
        self.public_key = public_key
        self.smoke_python = smoke_python
        self._processes: list[subprocess.Popen[bytes]] = []

    def root(self, number: int) -> Path:
        """The `--root` of process `number`: its devices live in `root/{device_id}/`."""
        return self.folder / f"process-{number}"

    def log(self, number: int) -> Path:
        """Where process `number` logs."""
        return self.folder / f"process-{number}.log"

    def device_root(self, device_id: str) -> Path:
        """The folder of one device."""
        return self.root(self._process_of[device_id]) / device_id

    @property
    def pids(self) -> list[int]:
        """The agent processes' ids."""
        return [process.pid for process in self._processes]

    def start(self, timeout_s: float) -> float:
        """Start every process; returns once all their agents connected (seconds taken)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        for number, group in enumerate(self.groups):
            ids = self.folder / f"process-{number}.devices"
            ids.write_text("".join(f"{device}\n" for device in group))
            command = [
                sys.executable,
                "-m",
                "modelferry.cli",
                "agent",
                "--transport",
                "mqtt",
                "--broker-host",
                self.broker.host,
                "--broker-port",
                str(self.broker.port),
                "--device-ids-file",
                str(ids),
                "--root",
                str(self.root(number)),
                "--public-key",
                self.public_key,
                "--log-level",
                "INFO",
            ]
            if self.smoke_python is not None:
                command += ["--smoke-python", str(self.smoke_python)]
            with self.log(number).open("ab") as log:
                self._processes.append(
                    subprocess.Popen(
                        command,
                        cwd=REPO,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
        waiting = set(range(len(self.groups)))
        deadline = started + timeout_s
        while waiting:
            for number in list(waiting):
                if self._processes[number].poll() is not None:
                    raise RuntimeError(
                        f"agent process {number} exited at start:\n{_tail(self.log(number))}"
                    )
                if _said_connected(self.log(number)):
                    waiting.discard(number)
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"agent process(es) {sorted(waiting)} did not connect within {timeout_s:g} s"
                )
            time.sleep(0.1)
        return time.monotonic() - started

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM every process (agents abandon deliveries cleanly), then wait; kill laggards."""
        for process in self._processes:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for process in self._processes:
            try:
                process.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self._processes = []


def _said_connected(log: Path) -> bool:
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return False
    return any(_CONNECTED in line and "edge agent" in line for line in text.splitlines())


def _tail(path: Path, characters: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-characters:]
    except OSError:
        return ""
