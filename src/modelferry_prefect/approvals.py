"""`modelferry pending` and `modelferry approve` on Prefect's own client.

Prefect's settings decide where and how to connect, as for any Prefect command: the API
URL, the API key or auth string and the TLS options come from the environment or the
active profile (`prefect config set PREFECT_API_URL=...`), and the client retries busy
answers (429, 502, 503) and dropped connections. What is added here is what Prefect
leaves to its callers: waiting for a paused run's form to be saved before answering it,
and messages that say what to do.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Self

import httpx
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterId,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.client.schemas.responses import (
    SetStateStatus,
    StateAbortDetails,
    StateRejectDetails,
    StateWaitDetails,
)
from prefect.client.schemas.sorting import FlowRunSort
from prefect.exceptions import ObjectNotFound
from prefect.settings import PREFECT_API_URL, get_current_settings, temporary_settings

from modelferry.approval.pause import reviewer_deadline
from modelferry.errors import FlowRunNotFoundError, FlowRunNotPausedError, OrchestratorError
from modelferry_prefect.api_errors import (
    PENDING_HINT,
    is_missing_route,
    no_api_url,
    not_api_root,
    not_http,
    redacted_url,
    translated_errors,
)

if TYPE_CHECKING:
    from prefect.client.schemas import OrchestrationResult
    from prefect.client.schemas.objects import FlowRun

__all__ = [
    "PausedRun",
    "PrefectApprovals",
    "check_resume_result",
    "connect",
    "wait_for_input_schema",
]

# The server's default page size (PREFECT_SERVER_API_DEFAULT_LIMIT) is also its maximum.
_PAGE_SIZE: Final = 200
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


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


def connect(api_url: str | None = None) -> PrefectApprovals:
    """Prefect's client for the approval commands, from Prefect's settings.

    Args:
        api_url: Use this API root instead of PREFECT_API_URL; everything else (key, auth
            string, TLS, retries) still comes from Prefect's settings.

    Raises:
        OrchestratorError: no API URL is set anywhere, or it is not an http(s) URL.
    """
    url = (api_url or get_current_settings().api.url or "").strip()
    # Without a URL Prefect's client would start a temporary server of its own: an empty
    # one, where no run waits for approval.
    if not url:
        raise no_api_url()
    if not url.startswith(("http://", "https://")):
        raise not_http(url)
    try:
        with temporary_settings({PREFECT_API_URL: url}):
            client = get_client(sync_client=True)
    except (ValueError, httpx.InvalidURL):
        raise not_http(url) from None
    return PrefectApprovals(client)


class PrefectApprovals:
    """Lists the flow runs waiting for approval and answers their forms.

    Use it as a context manager, which opens and closes the client's connections.

    Args:
        client: A client from `prefect.get_client(sync_client=True)`, not yet entered.
    """

    def __init__(self, client: SyncPrefectClient) -> None:
        self._client = client
        #: The API root without credentials, for messages.
        self.api_url: Final = redacted_url(str(client.api_url))

    def __repr__(self) -> str:
        # The client's headers may hold the API key or auth string: never shown.
        return f"PrefectApprovals(api_url={self.api_url!r})"

    def __enter__(self) -> Self:
        self._client.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._client.__exit__(exc_type, exc, tb)

    def list_paused_runs(self) -> list[PausedRun]:
        """Every paused flow run (Paused or Suspended), the longest-waiting first.

        Raises:
            OrchestratorError: the API could not be reached or answered with an error.
        """
        paused = FlowRunFilter(
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))
        )
        runs: list[FlowRun] = []
        with translated_errors(self.api_url):
            while True:
                page = self._client.read_flow_runs(
                    flow_run_filter=paused,
                    sort=FlowRunSort.ID_DESC,
                    limit=_PAGE_SIZE,
                    offset=len(runs),
                )
                runs.extend(page)
                if len(page) < _PAGE_SIZE:
                    break
            flow_names = self._flow_names({run.flow_id for run in runs})
        found = [_paused_run(run, flow_names) for run in runs]
        # Oldest first: the run that has waited longest is the one most likely to time out.
        found.sort(key=lambda run: (run.paused_since is None, run.paused_since or _EPOCH))
        return found

    def resume(
        self,
        flow_run_id: str,
        run_input: dict[str, Any],
        *,
        schema_timeout: float = 10.0,
        poll_interval: float = 0.25,
    ) -> None:
        """Resume a flow run paused for input, answering its form with `run_input`.

        Prefect validates `run_input` against the form's JSON schema, which the paused
        flow saves just *after* it pauses; resuming in between is rejected, so this waits
        up to `schema_timeout` seconds for the schema to appear.

        Args:
            flow_run_id: The paused run's id.
            run_input: The form's fields, e.g. {"decision": "approve", "reviewer": "alice"}.
            schema_timeout: How long to wait for the paused run to save its input schema.
            poll_interval: Seconds between checks for the schema.

        Raises:
            FlowRunNotFoundError: no flow run has that id (or it is not a UUID).
            FlowRunNotPausedError: the run is not paused, is paused without a form, or
                stopped waiting before it was answered.
            OrchestratorError: the schema never appeared, Prefect refused the input (the
                message says what was wrong), or the API could not be reached.
        """
        run = self.read_flow_run(flow_run_id)
        label = f"flow run {run.id} ({run.name})"
        if run.state is None or not run.state.is_paused():
            state = run.state.name if run.state is not None else "no state"
            raise FlowRunNotPausedError(
                f"{label} is not paused: its state is {state}; only paused runs can be "
                f"approved; {PENDING_HINT}",
                flow_run_id=str(run.id),
            )
        keyset = run.state.state_details.run_input_keyset
        if keyset is None:
            raise FlowRunNotPausedError(
                f"{label} is paused but not waiting for approval input, so an approval "
                "would be lost; resume it from the Prefect UI instead",
                flow_run_id=str(run.id),
            )
        schema_key = keyset.get("schema")
        if schema_key is None:
            raise OrchestratorError(
                f"{label} waits for input without a form schema; is {self.api_url} a "
                "Prefect 3 server?",
                flow_run_id=str(run.id),
            )
        wait_for_input_schema(
            lambda: self._input_saved(run.id, schema_key),
            label=label,
            timeout=schema_timeout,
            poll_interval=poll_interval,
        )
        with translated_errors(self.api_url):
            result = self._client.resume_flow_run(run.id, run_input=run_input)
        check_resume_result(result, label)

    def read_flow_run(self, flow_run_id: str) -> FlowRun:
        """Read one flow run.

        Raises:
            FlowRunNotFoundError: `flow_run_id` is not a UUID or no run has it.
            OrchestratorError: the API could not be reached or answered with an error.
        """
        run_id = _flow_run_uuid(flow_run_id)
        with translated_errors(self.api_url):
            try:
                return self._client.read_flow_run(run_id)
            except ObjectNotFound as exc:
                cause = exc.http_exc
                if isinstance(cause, httpx.HTTPStatusError) and is_missing_route(cause.response):
                    raise not_api_root(self.api_url, cause.request.url.path) from None
                raise FlowRunNotFoundError(
                    f"flow run {run_id} not found on {self.api_url}; {PENDING_HINT}",
                    flow_run_id=str(run_id),
                ) from None

    def _input_saved(self, flow_run_id: uuid.UUID, key: str) -> bool:
        with translated_errors(self.api_url):
            try:
                self._client.read_flow_run_input(flow_run_id, key)
            except httpx.HTTPStatusError as exc:
                if exc.response.status_code == httpx.codes.NOT_FOUND:
                    return False
                raise
        return True

    def _flow_names(self, flow_ids: set[uuid.UUID]) -> dict[uuid.UUID, str]:
        ids = sorted(flow_ids, key=str)
        names: dict[uuid.UUID, str] = {}
        for start in range(0, len(ids), _PAGE_SIZE):
            chunk = ids[start : start + _PAGE_SIZE]
            flows = self._client.read_flows(
                flow_filter=FlowFilter(id=FlowFilterId(any_=chunk)), limit=_PAGE_SIZE
            )
            names.update((flow.id, flow.name) for flow in flows)
        return names


def wait_for_input_schema(
    is_saved: Callable[[], bool],
    *,
    label: str,
    timeout: float,
    poll_interval: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Return once `is_saved()` is true, checking every `poll_interval` seconds.

    It is always checked at least once, and once more at or after the deadline.

    Args:
        is_saved: Whether the paused run has saved its form's schema yet.
        label: The run, as messages name it.
        timeout: Seconds to wait in all.
        poll_interval: Seconds between checks.
        clock: Monotonic seconds (tests pass a fake clock).
        sleep: Waits a number of seconds (tests pass one that advances the fake clock).

    Raises:
        OrchestratorError: the schema did not appear within `timeout` seconds.
    """
    deadline = clock() + timeout
    while not is_saved():
        now = clock()
        if now >= deadline:
            raise OrchestratorError(
                f"{label} is paused but has not saved its approval form after "
                f"{timeout:g} s; it may have crashed while pausing. Check it in the Prefect "
                "UI and try again"
            )
        sleep(min(poll_interval, deadline - now))


def _paused_run(run: FlowRun, flow_names: Mapping[uuid.UUID, str]) -> PausedRun:
    details = run.state.state_details if run.state is not None else None
    return PausedRun(
        id=str(run.id),
        flow_name=flow_names.get(run.flow_id, str(run.flow_id)),
        run_name=run.name,
        paused_since=run.state.timestamp if run.state is not None else None,
        pause_timeout=reviewer_deadline(
            details.pause_key if details else None, details.pause_timeout if details else None
        ),
        waits_for_input=details is not None and details.run_input_keyset is not None,
    )


def check_resume_result(result: OrchestrationResult[Any], label: str) -> None:
    """Return if the server accepted a resume; else raise, saying why it did not.

    Raises:
        FlowRunNotPausedError: the run stopped waiting (resumed by someone else, or its
            pause timed out) before this answer reached it.
        OrchestratorError: the server refused the input (the reason says what was wrong)
            or asked to wait.
    """
    if result.status == SetStateStatus.ACCEPT:
        return
    details = result.details
    reason: str | None = None
    if isinstance(details, StateWaitDetails):
        reason = f"asked to wait {details.delay_seconds} s before resuming"
    elif isinstance(details, StateRejectDetails | StateAbortDetails):
        reason = details.reason
    reason = reason or "no reason given"
    # The run may have timed out or been resumed by someone else since it was read.
    if result.status == SetStateStatus.ABORT and "not paused" in reason:
        raise FlowRunNotPausedError(f"{label}: {reason}")
    if result.state is not None and result.state.type == StateType.FAILED:
        raise FlowRunNotPausedError(f"{label} can no longer be resumed: {reason}")
    raise OrchestratorError(f"Prefect did not resume {label}: {result.status.value}: {reason}")


def _flow_run_uuid(flow_run_id: str) -> uuid.UUID:
    try:
        return uuid.UUID(flow_run_id.strip())
    except ValueError:
        raise FlowRunNotFoundError(
            f"flow run {flow_run_id!r} not found: a flow run id is a UUID such as "
            f"'{uuid.UUID(int=0)}'; {PENDING_HINT}",
            flow_run_id=flow_run_id,
        ) from None
