"""Pieces for end-to-end delivery tests: agent processes, checks of what devices installed
and reported, and a package store whose downloads wait at a gate.

    with AgentFleet.start(host, port, root, [["a1", "a2"], ["b"]], [public_key]) as fleet:
        ...fleet.device_root("a1")...          # `modelferry agent` processes over MQTT

    with GatedPackageServer(root) as server:   # HTTP downloads held half-way until
        server.wait_until_held(3)              # `release()`: deliveries stay in progress
        server.release()                       # for as long as a test needs them to

`RestartWhileDownloading` puts the two together: it restarts a broker once every device
is recorded as `Downloading` and held at the gate, then opens the gate.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Self
from urllib.parse import unquote, urlsplit

from blocks.base import PackageStoreBlock
from modelferry.delivery.protocol.states import FINAL_STATES
from modelferry.delivery.records.store import DeliveryRecords
from modelferry.packaging import (
    ENVELOPE_NAME,
    MANIFEST_NAME,
    SIGNATURE_NAME,
    Envelope,
    Manifest,
    PackageStatement,
    VerifyKey,
    verify_tree,
)
from modelferry.stores.base import StoredPackage
from modelferry.stores.local import LocalPackageStore
from modelferry.testing.mosquitto import Mosquitto

AGENT_START_TIMEOUT_S = 60.0
_CONNECTED = re.compile(r"edge agent\(s\) .* connected$", re.MULTILINE)


def agent_command(*arguments: str) -> list[str]:
    """The `modelferry agent ...` command line, run by this interpreter."""
    return [sys.executable, "-m", "modelferry.cli", "agent", *arguments]


@dataclass
class AgentProcess:
    """One `modelferry agent --transport mqtt` process serving one or more devices."""

    root: Path
    device_ids: tuple[str, ...]
    process: subprocess.Popen[bytes]
    log: Path

    def device_root(self, device_id: str) -> Path:
        """Where the agent keeps a device's files (the root itself for a lone device)."""
        if device_id not in self.device_ids:
            raise KeyError(device_id)
        return self.root if len(self.device_ids) == 1 else self.root / device_id

    def wait_connected(self, timeout_s: float = AGENT_START_TIMEOUT_S) -> None:
        """Wait for the agent to log that all its devices are connected to the broker."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if _CONNECTED.search(self.output()):
                return
            if self.process.poll() is not None:
                raise RuntimeError(f"the agent exited at start:\n{self.output()}")
            time.sleep(0.05)
        raise RuntimeError(f"the agent did not connect in {timeout_s} s:\n{self.output()}")

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM, as a service manager stops it; returns the exit code (None if killed)."""
        if self.process.poll() is not None:
            return self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            return None

    def output(self) -> str:
        """What the agent logged so far."""
        return self.log.read_text(encoding="utf-8", errors="replace") if self.log.exists() else ""


@dataclass
class AgentFleet:
    """Several agent processes; devices are addressed by id, whichever process serves them."""

    agents: list[AgentProcess] = field(default_factory=list)

    @classmethod
    @contextlib.contextmanager
    def start(
        cls,
        host: str,
        port: int,
        root: Path,
        groups: Sequence[Sequence[str]],
        public_keys: Sequence[str],
    ) -> Iterator[AgentFleet]:
        """Start one agent process per group of device ids; stop them all on exit.

        Args:
            host: the MQTT broker's host.
            port: the MQTT broker's port.
            root: a folder; process *n* keeps its files under `root/agent-n`.
            groups: the device ids of each process.
            public_keys: the package signing keys the agents trust (base64 or files).
        """
        fleet = cls()
        try:
            for number, devices in enumerate(groups):
                folder = root / f"agent-{number}"
                folder.mkdir(parents=True)
                arguments = ["--transport", "mqtt", "--broker-host", host]
                arguments += ["--broker-port", str(port), "--root", str(folder)]
                for device in devices:
                    arguments += ["--device-id", device]
                for key in public_keys:
                    arguments += ["--public-key", key]
                log = root / f"agent-{number}.log"
                # A file, not a pipe: nobody reads a pipe while the agent runs.
                with log.open("wb") as output:
                    process = subprocess.Popen(
                        agent_command(*arguments), stdout=output, stderr=subprocess.STDOUT
                    )
                fleet.agents.append(AgentProcess(folder, tuple(devices), process, log))
            for agent in fleet.agents:
                agent.wait_connected()
            yield fleet
        finally:
            for agent in fleet.agents:
                agent.stop()

    @property
    def devices(self) -> list[str]:
        """Every device id, in start order."""
        return [device for agent in self.agents for device in agent.device_ids]

    def agent_of(self, device_id: str) -> AgentProcess:
        """The process serving `device_id`."""
        return next(agent for agent in self.agents if device_id in agent.device_ids)

    def device_root(self, device_id: str) -> Path:
        """Where `device_id`'s files are."""
        return self.agent_of(device_id).device_root(device_id)

    def still_running(self) -> bool:
        """True while every agent process is alive."""
        return all(agent.process.poll() is None for agent in self.agents)


def verify_installed(folder: Path, public_key: VerifyKey) -> Manifest:
    """Check an installed package folder as a device would trust it: the signature with
    `public_key` (format 2's envelope, or format 1's `manifest.sig`), then every file
    against the manifest. Returns the manifest.

    Raises:
        AssertionError: the signature does not verify.
        PackageVerificationError: a file is missing, extra, or altered.
    """
    manifest_bytes = (folder / MANIFEST_NAME).read_bytes()
    if (folder / ENVELOPE_NAME).exists():  # format 2: a DSSE envelope over a statement
        envelope = Envelope.from_bytes((folder / ENVELOPE_NAME).read_bytes())
        assert any(
            public_key.is_valid_signature(envelope.signed_bytes, signature.sig)
            for signature in envelope.signatures
        ), f"{folder}: bad signature"
        statement = PackageStatement.from_bytes(envelope.payload)
        assert statement.manifest_sha256 == hashlib.sha256(manifest_bytes).hexdigest()
    else:
        signature = base64.b64decode((folder / SIGNATURE_NAME).read_bytes().strip(), validate=True)
        assert public_key.is_valid_signature(manifest_bytes, signature), f"{folder}: bad signature"
    manifest = Manifest.from_bytes(manifest_bytes)
    verify_tree(folder, manifest)
    return manifest


class GatedPackageServer:
    """Serves a package folder over HTTP and holds every download half-way at a gate.

    Each GET answers with the status line, `Content-Length` and the first half of the file
    at once, then waits until `release()` before sending the rest: the downloading agent
    has reported `Downloading` and its delivery stays in progress until the test lets it
    go. After `release()` downloads are served whole. `Range` is ignored (the whole file
    with 200 is a valid answer to it).
    """

    def __init__(self, root: Path, gate_timeout_s: float = 120.0) -> None:
        self.root = root.resolve()
        self.gate_timeout_s = gate_timeout_s
        self.requests: list[str] = []
        self._gate = threading.Event()
        self._held = 0
        self._changed = threading.Condition()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        """`http://127.0.0.1:{port}`."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def held(self) -> int:
        """Downloads that have reached the gate since the server started."""
        with self._changed:
            return self._held

    def wait_until_held(self, count: int, timeout_s: float = 120.0) -> None:
        """Wait until `count` downloads have reached the gate."""
        with self._changed:
            if not self._changed.wait_for(lambda: self._held >= count, timeout_s):
                raise TimeoutError(
                    f"{self._held} of {count} download(s) reached the gate in {timeout_s} s"
                )

    def release(self) -> None:
        """Let held and later downloads finish."""
        self._gate.set()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                relative = unquote(urlsplit(self.path).path).lstrip("/")
                path = (server.root / relative).resolve()
                server.requests.append(relative)
                if not path.is_relative_to(server.root) or not path.is_file():
                    self.send_error(404)
                    return
                data = path.read_bytes()
                half = len(data) // 2
                self.send_response(200)
                self.send_header("Content-Type", "application/zip")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                with contextlib.suppress(ConnectionError):
                    self.wfile.write(data[:half])
                    self.wfile.flush()
                    if not server._gate.is_set():
                        with server._changed:
                            server._held += 1
                            server._changed.notify_all()
                        server._gate.wait(server.gate_timeout_s)
                    self.wfile.write(data[half:])

            def log_message(self, format: str, *args: object) -> None:
                """Quiet: the test reads `requests` instead."""

        return Handler

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)


class GatedHttpPackageStore(LocalPackageStore):
    """A local store whose links lead to a `GatedPackageServer` serving its folder."""

    name = "gated-http"

    def __init__(self, root: Path | str, base_url: str) -> None:
        super().__init__(root)
        self.base_url = base_url.rstrip("/")

    def link(self, package: StoredPackage, expires_in: timedelta | None = None) -> str:
        """An HTTP link to the package, distinct per call as a real store's links are."""
        super().link(package, expires_in)  # refuses an unknown package as the contract says
        return f"{self.base_url}/{package.key}?link={uuid.uuid4().hex}"


class GatedHttpPackageStoreBlock(PackageStoreBlock):
    """A block giving the gated store, as a Blob Storage block gives its store."""

    _block_type_name = "Test Gated HTTP Package Store"
    _block_type_slug = "test-gated-http-package-store"

    root: str
    base_url: str

    def get_store(self) -> GatedHttpPackageStore:
        """The store this block configures."""
        return GatedHttpPackageStore(self.root, self.base_url)


@contextlib.contextmanager
def open_records(url: str) -> Iterator[DeliveryRecords]:
    """The delivery records at `url`, closed afterwards."""
    records = DeliveryRecords(url)
    try:
        yield records
    finally:
        records.close()


def reported_states(records: DeliveryRecords, delivery_id: str) -> list[str]:
    """The states a device itself reported for a delivery, in order, repeats folded."""
    states: list[str] = []
    for transition in records.transitions(delivery_id):
        if transition.reported_at is not None and transition.state not in states[-1:]:
            states.append(transition.state)
    return states


def latest_states(records: DeliveryRecords, devices: Sequence[str]) -> dict[str, str]:
    """Each device's newest delivery's recorded state ('' for a device with none)."""
    states = {}
    for device in devices:
        newest = records.history(device, limit=1)
        states[device] = newest[0].state if newest else ""
    return states


def all_downloading(records: DeliveryRecords, devices: Sequence[str]) -> bool:
    """True when each device's newest delivery is under way and has reported Downloading."""
    for device in devices:
        newest = records.history(device, limit=1)
        if not newest or newest[0].state in FINAL_STATES:
            return False
        if "Downloading" not in reported_states(records, newest[0].delivery_id):
            return False
    return True


@dataclass
class RestartWhileDownloading:
    """In a thread: once every device is held at the gate and recorded as `Downloading`,
    restart the broker, note each device's recorded state, then open the gate.

    The gate opens whatever happens, so a failure here cannot hang the delivery; `problem`
    says what went wrong.
    """

    broker: Mosquitto
    server: GatedPackageServer
    records_url: str
    devices: Sequence[str]
    timeout_s: float = 120.0
    states_at_restart: dict[str, str] | None = None
    problem: str | None = None
    _thread: threading.Thread | None = None

    def start(self) -> None:
        """Start watching."""
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def join(self, timeout_s: float = 30.0) -> None:
        """Wait for the thread to end."""
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _run(self) -> None:
        try:
            self.server.wait_until_held(len(self.devices), self.timeout_s)
            with open_records(self.records_url) as records:
                deadline = time.monotonic() + self.timeout_s
                while not all_downloading(records, self.devices):
                    if time.monotonic() > deadline:
                        states = latest_states(records, self.devices)
                        raise TimeoutError(f"not every device is Downloading: {states}")
                    time.sleep(0.05)
                self.broker.restart()
                self.states_at_restart = latest_states(records, self.devices)
        except Exception as exc:  # reported to the test, which fails with it
            self.problem = repr(exc)
        finally:
            self.server.release()
