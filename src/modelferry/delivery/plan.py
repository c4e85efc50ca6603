"""What a fleet rollout delivers to whom (`DeliveryPlan`) and how (`FleetPolicy`)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from modelferry.delivery.outcomes import FailureKind
from modelferry.delivery.session import (
    DEFAULT_DEADLINE_SECONDS,
    DEFAULT_INACTIVITY_SECONDS,
    SessionTimeouts,
)
from modelferry.errors import PackageStoreError
from modelferry.stores.base import PackageStore, StoredPackage

#: What is retried unless configured otherwise: the device may simply have been away.
DEFAULT_RETRY_ON: frozenset[FailureKind] = frozenset({"timeout", "transport"})


class FleetPolicy(BaseModel):
    """How a package is rolled out to a fleet: clocks, parallelism, rings, abort, retries.

    The one definition of the policy: the config file's `delivery` section holds these
    keys, and the `deliver-package` flow takes it as its `fleet` parameter. The library's
    earlier names (`inactivity_timeout`, `deadline`, `retry_backoff`) are still accepted.

    Attributes:
        inactivity_timeout_seconds: seconds without a valid message from a device before
            its delivery ends `TimedOut`.
        deadline_seconds: seconds one delivery attempt may take in all.
        max_parallel: devices being delivered to at once.
        canary_share: share of the devices in the first ring (at least one device when
            above 0); the rest start only after that ring finished. 0 means one ring.
        max_failure_share: the rollout stops starting devices once more than this share
            of all devices has failed, or more than this share of the canary ring failed.
        retries: further attempts per device after a failure listed in `retry_on`.
        retry_backoff_seconds: seconds before the first retry; then times `backoff_factor`.
        backoff_factor: growth of the delay between retries.
        retry_on: which failures are retried: `timeout`, `transport` (default), `store`,
            `device` (the device reported Error).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    inactivity_timeout_seconds: float = Field(
        default=DEFAULT_INACTIVITY_SECONDS,
        gt=0,
        validation_alias=AliasChoices("inactivity_timeout_seconds", "inactivity_timeout"),
        description="A device silent this long (seconds) times out.",
    )
    deadline_seconds: float = Field(
        default=DEFAULT_DEADLINE_SECONDS,
        gt=0,
        validation_alias=AliasChoices("deadline_seconds", "deadline"),
        description="The longest one delivery attempt may take (seconds).",
    )
    max_parallel: int = Field(
        default=50, ge=1, le=10_000, description="Devices delivered to at once."
    )
    canary_share: float = Field(
        default=0.1,
        ge=0,
        le=1,
        description="Share of devices in the first ring (at least one); 0 for one ring.",
    )
    max_failure_share: float = Field(
        default=0.2,
        ge=0,
        le=1,
        description="Stop starting devices once more than this share failed.",
    )
    retries: int = Field(
        default=2,
        ge=0,
        le=10,
        description="Further attempts per device after a failure listed in retry_on.",
    )
    retry_backoff_seconds: float = Field(
        default=5.0,
        ge=0,
        validation_alias=AliasChoices("retry_backoff_seconds", "retry_backoff"),
        description="Wait before the first retry (seconds); times backoff_factor for each next.",
    )
    backoff_factor: float = Field(
        default=2.0, ge=1, description="Growth of the delay between retries."
    )
    retry_on: frozenset[FailureKind] = Field(
        default=DEFAULT_RETRY_ON,
        description="Failures that are retried: timeout, transport, store, device.",
    )

    @property
    def inactivity_timeout(self) -> float:
        """`inactivity_timeout_seconds`, by its earlier name."""
        return self.inactivity_timeout_seconds

    @property
    def deadline(self) -> float:
        """`deadline_seconds`, by its earlier name."""
        return self.deadline_seconds

    @property
    def retry_backoff(self) -> float:
        """`retry_backoff_seconds`, by its earlier name."""
        return self.retry_backoff_seconds

    def fleet_policy(self) -> FleetPolicy:
        """Just the policy, without whatever a subclass adds (the config's devices)."""
        if type(self) is FleetPolicy:
            return self
        return FleetPolicy.model_validate(self.model_dump(include=set(FleetPolicy.model_fields)))

    @property
    def timeouts(self) -> SessionTimeouts:
        """The two clocks of each delivery attempt."""
        return SessionTimeouts(inactivity=self.inactivity_timeout, deadline=self.deadline)

    def backoff_delay(self, retry: int) -> float:
        """Seconds to wait before retry number `retry` (1 for the first retry)."""
        return self.retry_backoff * self.backoff_factor ** (retry - 1)

    def rings(self, devices: Sequence[str]) -> list[list[str]]:
        """The devices split into rollout rings: a canary ring first, then the rest."""
        if not devices:
            return []
        canary = math.ceil(len(devices) * self.canary_share) if self.canary_share > 0 else 0
        if canary == 0 or canary >= len(devices):
            return [list(devices)]
        return [list(devices[:canary]), list(devices[canary:])]


def parse_device_ids(target: str | Sequence[str]) -> tuple[str, ...]:
    """Device ids from one id, a comma-separated string or a list.

    The order is kept and duplicates are dropped.

    Raises:
        ValueError: no device id at all.
    """
    parts = target.split(",") if isinstance(target, str) else list(target)
    ids = tuple(dict.fromkeys(part.strip() for part in parts if part and part.strip()))
    if not ids:
        raise ValueError(f"no target device id in {target!r}: give one id, a list, or 'a,b,c'")
    return ids


class DeliveryPlan(BaseModel):
    """One package, and the devices it goes to.

    Attributes:
        package: the package in the store.
        devices: device ids, in rollout order (the canary ring is the first ones).
        project_id: the protocol's `projectId` for these deliveries.
        model_name: the model the package holds, for the records.
        model_version: its version, for the records.
    """

    model_config = ConfigDict(frozen=True)

    package: StoredPackage
    devices: tuple[str, ...] = Field(min_length=1)
    project_id: str = Field(min_length=1)
    model_name: str | None = None
    model_version: str | None = None

    @field_validator("devices", mode="before")
    @classmethod
    def _device_ids(cls, value: object) -> tuple[str, ...]:
        if isinstance(value, str | list | tuple):
            return parse_device_ids(value)
        raise ValueError("devices must be a list of device ids or a comma-separated string")

    @model_validator(mode="after")
    def _named_package(self) -> DeliveryPlan:
        if not self.package.package_id or not self.package.version:
            raise ValueError("the package needs an id and a version")
        return self


def require_package(store: PackageStore, package_id: str, version: str) -> StoredPackage:
    """The package from the store, or an error saying how to put it there.

    Raises:
        PackageStoreError: the store has no such package.
    """
    package = store.get(package_id, version)
    if package is None:
        raise PackageStoreError(
            f"package {package_id!r} version {version!r} is not in the {store.name} package "
            "store; build it with the package-model flow (python -m flows.package_model "
            f"--model-name ... --package-id {package_id} --package-version {version}) and "
            "upload it to this store, then deliver again"
        )
    return package
