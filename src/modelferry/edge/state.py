"""What an edge agent remembers between runs: `ROOT/state.json`.

The file holds the deliveries the agent has handled (so a repeated `deliveryId` is answered
from memory, and one cut short by a restart is resumed) and the installed versions in
install order, oldest first (so a rollback knows where to go back to, and a version rolled
back from stays listed for a roll forward), and the anti-rollback floor of each model: the
highest `min_version` of an installed package, below which no version of that model is
installed again (see `version_floors`). It is written
atomically (a temporary file, fsync, `os.replace`) under an advisory lock on `ROOT/.lock`,
so an agent and a `modelferry agent rollback` on the same root never interleave.

The `ROOT/current` symlink, not this file, says which version is current. An install
writes this file at each step (see `install`): first its intent (`installing`, the
journal), then the version into the history before `current` is switched to it, so the
history lists the current version at every instant; `install.prepare_root` finishes or
drops an install a crash cut short.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from modelferry.delivery.protocol.messages import TERMINAL_STATES, format_timestamp, utc_now
from modelferry.packaging.statement import is_below

__all__ = [
    "STATE_FILE",
    "AgentState",
    "DeviceDeliveryState",
    "InstalledVersion",
    "StateStore",
]

logger = logging.getLogger(__name__)

STATE_FILE: Final = "state.json"
_LOCK_FILE: Final = ".lock"
_SCHEMA: Final = 1
#: Terminal records kept for answering repeats; older ones are forgotten first.
MAX_DELIVERY_RECORDS: Final = 1000


@dataclass
class DeviceDeliveryState:
    """One delivery as this device's agent last saw it; `state` is the last state it reported.

    The device's side of a delivery, kept in `state.json`; the cloud's record of the
    same delivery is `modelferry.delivery.records.store.DeliveryRecord`.
    """

    delivery_id: str
    project_id: str
    package_id: str
    package_version: str
    state: str
    attributes: dict[str, Any] = field(default_factory=dict)
    updated_at: str = ""

    @property
    def terminal(self) -> bool:
        """True once the delivery ended in `Success` or `Error`."""
        return self.state in TERMINAL_STATES

    def to_json(self) -> dict[str, Any]:
        """The record as it is stored in `state.json`."""
        return {
            "deliveryId": self.delivery_id,
            "projectId": self.project_id,
            "packageId": self.package_id,
            "packageVersion": self.package_version,
            "state": self.state,
            "attributes": self.attributes,
            "updatedAt": self.updated_at,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DeviceDeliveryState:
        """A record read back from `state.json`."""
        return cls(
            delivery_id=str(data["deliveryId"]),
            project_id=str(data["projectId"]),
            package_id=str(data["packageId"]),
            package_version=str(data["packageVersion"]),
            state=str(data["state"]),
            attributes=dict(data.get("attributes") or {}),
            updated_at=str(data.get("updatedAt", "")),
        )


@dataclass(frozen=True)
class InstalledVersion:
    """A package version installed under `ROOT/versions/{package_id}/{version}/`."""

    package_id: str
    version: str
    model_name: str = ""
    model_version: str = ""
    delivery_id: str = ""
    installed_at: str = ""

    @property
    def relative_path(self) -> str:
        """Its folder relative to the agent root (what `ROOT/current` points at)."""
        return f"versions/{self.package_id}/{self.version}"

    @property
    def label(self) -> str:
        """`package_id/version`, for messages."""
        return f"{self.package_id}/{self.version}"

    def to_json(self) -> dict[str, Any]:
        """The entry as it is stored in `state.json`."""
        return {
            "packageId": self.package_id,
            "version": self.version,
            "modelName": self.model_name,
            "modelVersion": self.model_version,
            "deliveryId": self.delivery_id,
            "installedAt": self.installed_at,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> InstalledVersion:
        """An entry read back from `state.json`."""
        return cls(
            package_id=str(data["packageId"]),
            version=str(data["version"]),
            model_name=str(data.get("modelName", "")),
            model_version=str(data.get("modelVersion", "")),
            delivery_id=str(data.get("deliveryId", "")),
            installed_at=str(data.get("installedAt", "")),
        )


@dataclass
class AgentState:
    """The content of `state.json`."""

    deliveries: dict[str, DeviceDeliveryState] = field(default_factory=dict)
    history: list[InstalledVersion] = field(default_factory=list)
    """Installed versions in install order, oldest first; after a rollback, versions newer
    than the current one stay listed (and on disk) until pruning drops them."""
    installing: InstalledVersion | None = None
    """The install under way (the journal): set before its folder is moved into place."""
    version_floors: dict[str, str] = field(default_factory=dict)
    """Model name -> the lowest version still accepted: the highest `min_version` of any
    package installed here. It only ever rises."""

    def raise_floor(self, model_name: str, min_version: str) -> None:
        """Make `min_version` the floor of `model_name` unless the floor is higher already."""
        current = self.version_floors.get(model_name)
        if current is None or is_below(current, min_version):
            self.version_floors[model_name] = min_version

    def record(self, record: DeviceDeliveryState) -> None:
        """Remember `record` (stamped now), forgetting the oldest terminal ones past the cap."""
        record.updated_at = format_timestamp(utc_now())
        self.deliveries.pop(record.delivery_id, None)
        self.deliveries[record.delivery_id] = record  # insertion order = age
        excess = len(self.deliveries) - MAX_DELIVERY_RECORDS
        if excess > 0:
            for delivery_id in [d for d, r in self.deliveries.items() if r.terminal][:excess]:
                del self.deliveries[delivery_id]

    def pending(self) -> list[DeviceDeliveryState]:
        """Deliveries accepted but not finished, in the order they arrived."""
        return [record for record in self.deliveries.values() if not record.terminal]

    def find(self, package_id: str, version: str) -> InstalledVersion | None:
        """The history entry of that version, if it is installed."""
        for entry in self.history:
            if (entry.package_id, entry.version) == (package_id, version):
                return entry
        return None

    def to_json(self) -> dict[str, Any]:
        """The state as it is stored in `state.json`, with its schema version."""
        return {
            "schema": _SCHEMA,
            "deliveries": [record.to_json() for record in self.deliveries.values()],
            "history": [entry.to_json() for entry in self.history],
            "installing": self.installing.to_json() if self.installing else None,
            "versionFloors": dict(self.version_floors),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AgentState:
        """The state read back from `state.json`."""
        deliveries = [DeviceDeliveryState.from_json(item) for item in data.get("deliveries", [])]
        installing = data.get("installing")
        return cls(
            deliveries={record.delivery_id: record for record in deliveries},
            history=[InstalledVersion.from_json(item) for item in data.get("history", [])],
            installing=InstalledVersion.from_json(installing) if installing else None,
            version_floors={
                str(name): str(floor) for name, floor in (data.get("versionFloors") or {}).items()
            },
        )


class StateStore:
    """Reads and atomically rewrites `ROOT/state.json`; blocking, so call it off the loop."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.path = root / STATE_FILE

    def read(self) -> AgentState:
        """The saved state; an empty one when there is none yet.

        A file that cannot be parsed is moved aside (`state.json.corrupt`) and an empty
        state is returned: the agent must keep working, and `ROOT/current` still says
        which version is current.
        """
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return AgentState()
        try:
            return AgentState.from_json(json.loads(text))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            aside = self.path.with_name(STATE_FILE + ".corrupt")
            logger.error("%s is unreadable (%s); moved to %s", self.path, exc, aside.name)
            os.replace(self.path, aside)
            return AgentState()

    @contextlib.contextmanager
    def update(self) -> Iterator[AgentState]:
        """Lock, read, let the caller change the state, then write it back atomically.

        Nothing is written when the block raises. Changes to the installed folders are
        made inside the block, so they and the state change hold the one lock together.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / _LOCK_FILE, "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                state = self.read()
                yield state
                self.write(state)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def reading(self) -> Iterator[AgentState]:
        """The saved state, with no install or rollback changing it until the block ends.

        Read the `current` link inside the block too: the shared lock keeps an install or
        rollback (which switch `current` and rewrite the history under the exclusive lock)
        from landing between the two reads. A root this process cannot lock (read-only,
        or not there yet) is read without the lock.
        """
        try:
            lock = open(self.root / _LOCK_FILE, "rb")  # noqa: SIM115 (held across the yield)
        except OSError:
            yield self.read()
            return
        with lock:
            fcntl.flock(lock, fcntl.LOCK_SH)
            try:
                yield self.read()
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def write(self, state: AgentState) -> None:
        """Write `state` now, durably: a step of a longer change inside `update()`.

        Call it only inside `update()`, which holds the lock (and writes again at the end).
        """
        write_json_atomically(self.path, state.to_json())


def write_json_atomically(path: Path, document: Any) -> None:
    """Write JSON to `path` so readers see the old file or the new one, never a mix."""
    data = json.dumps(document, indent=2, sort_keys=False).encode("utf-8") + b"\n"
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    fsync_directory(path.parent)


def fsync_directory(path: Path) -> None:
    """Make a rename or a new entry in `path` durable."""
    handle = os.open(path, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)
