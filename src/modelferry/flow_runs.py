"""Flow runs as the approval commands see them, parsed from Prefect API responses."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from modelferry.errors import OrchestratorError


@dataclass(frozen=True, slots=True)
class FlowRunInfo:
    """The parts of a flow run the approval commands look at.

    Attributes:
        id: The flow run id (a UUID string).
        name: The run's generated name, e.g. "papaya-stork".
        flow_id: The id of the flow it runs.
        state_type: "PAUSED", "RUNNING", "COMPLETED", ... or None before any state is set.
        state_name: The state's display name, e.g. "Paused" or "Suspended".
        state_timestamp: When the run entered its current state.
        pause_timeout: When a paused run gives up waiting, if it is paused.
        pause_key: The key the run paused with (the flow's own mark), if it is paused.
        run_input_keyset: The flow run input keys of a run paused for input
            ("description", "response", "schema"), else None.
    """

    id: str
    name: str
    flow_id: str
    state_type: str | None
    state_name: str | None
    state_timestamp: datetime | None
    pause_timeout: datetime | None
    pause_key: str | None
    run_input_keyset: dict[str, str] | None

    @property
    def is_paused(self) -> bool:
        """Whether the run is in a PAUSED state (which includes Suspended)."""
        return self.state_type == "PAUSED"

    @property
    def waits_for_input(self) -> bool:
        """Whether the run paused with `wait_for_input`, so resuming it takes a form."""
        return self.run_input_keyset is not None


@dataclass(frozen=True, slots=True)
class PausedRun:
    """A paused flow run, as `modelferry pending` lists it.

    Attributes:
        id: The flow run id to pass to `modelferry approve`.
        flow_name: The name of the flow, e.g. "train-and-register".
        run_name: The run's generated name.
        paused_since: When the run paused.
        pause_timeout: When the reviewer's time runs out, if known: for an approval pause
            the deadline the run logged, not the server's later one.
        waits_for_input: Whether it waits for a reviewer's input (an approval form).
    """

    id: str
    flow_name: str
    run_name: str
    paused_since: datetime | None
    pause_timeout: datetime | None
    waits_for_input: bool


def flow_run_from_json(data: Any) -> FlowRunInfo:
    """Parse a flow run as the Prefect API returns it (tolerating missing parts)."""
    if not isinstance(data, Mapping) or "id" not in data:
        raise OrchestratorError("the Prefect API returned a flow run without an id")
    state = data.get("state") if isinstance(data.get("state"), Mapping) else None
    details: Mapping[str, Any] = {}
    if state is not None and isinstance(state.get("state_details"), Mapping):
        details = state["state_details"]
    keyset = details.get("run_input_keyset")
    return FlowRunInfo(
        id=str(data["id"]),
        name=str(data.get("name") or ""),
        flow_id=str(data.get("flow_id") or ""),
        state_type=_str_or_none(state.get("type") if state else data.get("state_type")),
        state_name=_str_or_none(state.get("name") if state else data.get("state_name")),
        state_timestamp=parse_time(state.get("timestamp") if state else None),
        pause_timeout=parse_time(details.get("pause_timeout")),
        pause_key=_str_or_none(details.get("pause_key")),
        run_input_keyset=(
            {str(k): str(v) for k, v in keyset.items()} if isinstance(keyset, Mapping) else None
        ),
    )


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def parse_time(value: Any) -> datetime | None:
    """An ISO 8601 timestamp from the API as an aware datetime, or None."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    # Prefect sends UTC with a "Z"; an offset-less time is UTC too, never local time.
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
