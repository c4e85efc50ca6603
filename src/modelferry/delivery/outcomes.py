"""How deliveries end: per attempt, per device and per rollout.

One attempt is a `DeliveryOutcome`, one device over its attempts a `DeviceResult`, a whole
rollout a `FleetResult`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from modelferry.delivery.protocol.states import FAILED_STATES, SUCCESS
from modelferry.errors import DeliveryFailedError, DeliveryTimedOutError

#: Why a delivery failed: the device said so, a clock ran out, the transport or the store
#: failed.
FailureKind = Literal["device", "timeout", "transport", "store"]


@dataclass(frozen=True)
class DeliveryOutcome:
    """How one delivery attempt ended."""

    delivery_id: str
    device_id: str
    attempt: int
    state: str
    started_at: datetime
    ended_at: datetime
    error: str | None = None
    failure: FailureKind | None = None
    links_issued: int = 0

    @property
    def succeeded(self) -> bool:
        """True when the device reported `Success`."""
        return self.state == SUCCESS

    @property
    def duration(self) -> timedelta:
        """From the start of the attempt to its end."""
        return self.ended_at - self.started_at


@dataclass(frozen=True)
class DeviceResult:
    """How delivering to one device ended, over all its attempts."""

    device_id: str
    state: str
    attempts: int
    duration_seconds: float
    error: str | None
    package_id: str
    package_version: str
    model_name: str | None
    model_version: str | None
    delivery_id: str | None
    failure: FailureKind | None = None
    #: The rollout ring the device was in (1 is the canary ring when there are several).
    ring: int = 1
    #: When its last attempt ended, or when it was skipped (UTC).
    finished_at: datetime | None = None

    @property
    def failed(self) -> bool:
        """True for `Error` and `TimedOut` (a skipped device did not fail: it never started)."""
        return self.state in FAILED_STATES


@dataclass(frozen=True)
class FleetResult:
    """The outcome of a rollout: one row per device, in plan order."""

    rollout_id: str
    package_id: str
    package_version: str
    rows: tuple[DeviceResult, ...]
    aborted: bool = False
    abort_reason: str | None = None
    #: When the rollout began (UTC).
    started_at: datetime | None = None

    @property
    def counts(self) -> dict[str, int]:
        """Devices per final state."""
        return dict(Counter(row.state for row in self.rows))

    @property
    def failed(self) -> tuple[DeviceResult, ...]:
        """Devices that ended in `Error` or `TimedOut`."""
        return tuple(row for row in self.rows if row.failed)

    @property
    def ok(self) -> bool:
        """True when every device reported `Success`."""
        return not self.aborted and all(row.state == SUCCESS for row in self.rows)

    def summary(self) -> str:
        """The rollout in one line."""
        counts = ", ".join(f"{count} {state}" for state, count in sorted(self.counts.items()))
        text = (
            f"Delivered {self.package_id} {self.package_version} to {len(self.rows)} "
            f"device(s): {counts}"
        )
        if self.aborted:
            text += f"; rollout aborted: {self.abort_reason}"
        return text

    def failure_message(self, limit: int = 10) -> str:
        """What went wrong, device by device (the first `limit`), for an error message."""
        lines = [self.summary()]
        for row in self.failed[:limit]:
            lines.append(
                f"- {row.device_id}: {row.state} after {row.attempts} attempt(s): {row.error}"
            )
        if len(self.failed) > limit:
            lines.append(f"- and {len(self.failed) - limit} more")
        return "\n".join(lines)

    def failure_error(self, message: str) -> DeliveryFailedError | DeliveryTimedOutError:
        """The error to raise for this rollout when it is not `ok`, carrying `message`.

        `DeliveryTimedOutError` when every failure was a timeout and the rollout ran to its
        end, else `DeliveryFailedError`; either names the package and the failed devices.
        """
        timed_out_only = not self.aborted and all(r.failure == "timeout" for r in self.failed)
        error = DeliveryTimedOutError if timed_out_only else DeliveryFailedError
        return error(
            message,
            package=self.package_id,
            package_version=self.package_version,
            devices=[row.device_id for row in self.failed],
        )

    def table(self) -> list[dict[str, str | int | float]]:
        """One row per device, for a report: device, state, attempts, duration, error, ..."""
        return [
            {
                "device": row.device_id,
                "state": row.state,
                "attempts": row.attempts,
                "duration_s": round(row.duration_seconds, 1),
                "error": row.error or "",
                "package": f"{row.package_id} {row.package_version}",
                "model_version": row.model_version or "",
            }
            for row in self.rows
        ]
