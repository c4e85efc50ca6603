"""A small typed client for the few Prefect REST endpoints the approval commands need.

It speaks HTTP with httpx so the library never imports Prefect: `modelferry pending` and
`modelferry approve` work from any machine that can reach the Prefect API, with only the
core install.

The API key, when given, is sent as a Bearer header and is never part of any message,
repr or log line this module produces.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Final, Self

import httpx

from modelferry.approval.pause import reviewer_deadline
from modelferry.errors import FlowRunNotFoundError, FlowRunNotPausedError, OrchestratorError
from modelferry.flow_runs import FlowRunInfo, PausedRun, flow_run_from_json

__all__ = ["FlowRunInfo", "PausedRun", "PrefectApi"]

#: The URL a local `prefect server start` serves its API on.
LOCAL_API_URL: Final = "http://127.0.0.1:4200/api"

_START_SERVER_HINT: Final = (
    f"start one with `prefect server start`, then export PREFECT_API_URL={LOCAL_API_URL}"
)
_PENDING_HINT: Final = "run `modelferry pending` to list the flow runs waiting for approval"
# The server's default page size (PREFECT_SERVER_API_DEFAULT_LIMIT) is also its maximum.
_PAGE_SIZE: Final = 200


class PrefectApi:
    """A synchronous client for the Prefect 3 REST API (flow runs, flows, resume).

    Use it as a context manager, or call `close()`, to release its connections.

    Args:
        api_url: The API root, e.g. "http://127.0.0.1:4200/api".
        api_key: Sent as "Authorization: Bearer ..." (Prefect Cloud or an auth proxy).
        timeout: Seconds to wait for each HTTP request.
        transport: An httpx transport to use instead of the network (tests pass
            `httpx.MockTransport`).

    Raises:
        OrchestratorError: `api_url` is not an http(s) URL.
    """

    def __init__(
        self,
        api_url: str,
        api_key: str | None = None,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        url = api_url.strip().rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise OrchestratorError(
                f"the Prefect API URL {url!r} is not an http(s) URL; "
                f"expected something like {LOCAL_API_URL}"
            )
        headers = {"Accept": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        try:
            # httpx joins relative paths onto base_url, so "/flow_runs/x" lands under /api.
            self._client = httpx.Client(
                base_url=url, headers=headers, timeout=timeout, transport=transport
            )
            parsed = httpx.URL(url)
        except httpx.InvalidURL as exc:
            raise OrchestratorError(f"the Prefect API URL is invalid: {exc}") from None
        #: The API root, without any user:password part, for messages.
        self.api_url: Final = str(parsed.copy_with(username=None, password=None))

    @classmethod
    def from_environment(
        cls,
        api_url: str | None = None,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> PrefectApi:
        """Build a client from PREFECT_API_URL and PREFECT_API_KEY.

        Args:
            api_url: Use this URL instead of PREFECT_API_URL (the key still comes from
                PREFECT_API_KEY).
            timeout: Seconds to wait for each HTTP request.
            transport: See the class docstring.

        Raises:
            OrchestratorError: no URL was given and PREFECT_API_URL is unset.
        """
        url = api_url or os.environ.get("PREFECT_API_URL", "").strip()
        if not url:
            raise OrchestratorError(
                "PREFECT_API_URL is not set; approvals need a running Prefect server: "
                f"{_START_SERVER_HINT} (or pass --api-url)"
            )
        api_key = os.environ.get("PREFECT_API_KEY") or None
        return cls(url, api_key=api_key, timeout=timeout, transport=transport)

    def __repr__(self) -> str:
        # Deliberately without the headers: they may hold the API key.
        return f"PrefectApi(api_url={self.api_url!r})"

    def close(self) -> None:
        """Close the underlying HTTP connections."""
        self._client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- queries ---------------------------------------------------------------------------

    def get_flow_run(self, flow_run_id: str) -> FlowRunInfo:
        """Read one flow run.

        Raises:
            FlowRunNotFoundError: `flow_run_id` is not a UUID or no run has it.
            OrchestratorError: the API could not be reached or answered with an error.
        """
        run_id = _normalise_id(flow_run_id)
        response = self._request("GET", f"/flow_runs/{run_id}")
        # A generic "Not Found" means no such route (a URL without /api), not no such run.
        if response.status_code == httpx.codes.NOT_FOUND and _error_detail(response) != "Not Found":
            raise FlowRunNotFoundError(
                f"flow run {run_id} not found on {self.api_url}; {_PENDING_HINT}"
            )
        return flow_run_from_json(self._json(response))

    def list_paused_runs(self) -> list[PausedRun]:
        """List every paused flow run, the longest-waiting first.

        Raises:
            OrchestratorError: the API could not be reached or answered with an error.
        """
        runs: list[FlowRunInfo] = []
        offset = 0
        while True:
            body = {
                "flow_runs": {"state": {"type": {"any_": ["PAUSED"]}}},
                "sort": "ID_DESC",
                "limit": _PAGE_SIZE,
                "offset": offset,
            }
            page = self._json(self._request("POST", "/flow_runs/filter", json=body))
            if not isinstance(page, list):
                raise self._unexpected("/flow_runs/filter", "a list of flow runs")
            runs.extend(flow_run_from_json(item) for item in page)
            if len(page) < _PAGE_SIZE:
                break
            offset += len(page)
        flow_names = self._flow_names({run.flow_id for run in runs})
        paused = [
            PausedRun(
                id=run.id,
                flow_name=flow_names.get(run.flow_id, run.flow_id),
                run_name=run.name,
                paused_since=run.state_timestamp,
                pause_timeout=reviewer_deadline(run.pause_key, run.pause_timeout),
                waits_for_input=run.waits_for_input,
            )
            for run in runs
        ]
        # Oldest first: the run that has waited longest is the one most likely to time out.
        paused.sort(key=lambda run: (run.paused_since is None, run.paused_since or _EPOCH))
        return paused

    # -- commands --------------------------------------------------------------------------

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
            FlowRunNotPausedError: the run is not paused, or is paused without a form.
            OrchestratorError: the schema never appeared, Prefect refused the input or
                the transition, or the API could not be reached.
        """
        run = self.get_flow_run(flow_run_id)
        if not run.is_paused:
            state = run.state_name or run.state_type or "no state"
            raise FlowRunNotPausedError(
                f"flow run {run.id} ({run.name}) is not paused: its state is {state}; "
                f"only paused runs can be approved; {_PENDING_HINT}"
            )
        if run.run_input_keyset is None:
            raise FlowRunNotPausedError(
                f"flow run {run.id} ({run.name}) is paused but not waiting for approval "
                "input, so an approval would be lost; resume it from the Prefect UI instead"
            )
        schema_key = run.run_input_keyset.get("schema")
        if schema_key is None:
            raise self._unexpected(f"/flow_runs/{run.id}", "a run_input_keyset with 'schema'")
        self._wait_for_input_schema(run, schema_key, schema_timeout, poll_interval)

        path = f"/flow_runs/{run.id}/resume"
        result = self._json(self._request("POST", path, json={"run_input": run_input}))
        if not isinstance(result, Mapping) or "status" not in result:
            raise self._unexpected(path, "an orchestration result")
        status = str(result["status"])
        if status == "ACCEPT":
            return
        details = result.get("details")
        reason = details.get("reason") if isinstance(details, Mapping) else None
        if status == "WAIT" and isinstance(details, Mapping):
            reason = f"asked to wait {details.get('delay_seconds')} s before resuming"
        reason = reason or "no reason given"
        # The run may have timed out or been resumed by someone else since it was read.
        if status == "ABORT" and "not paused" in reason:
            raise FlowRunNotPausedError(f"flow run {run.id} ({run.name}): {reason}")
        raise OrchestratorError(
            f"Prefect did not resume flow run {run.id} ({run.name}): {status}: {reason}"
        )

    # -- plumbing --------------------------------------------------------------------------

    def _wait_for_input_schema(
        self, run: FlowRunInfo, schema_key: str, timeout: float, poll_interval: float
    ) -> None:
        path = f"/flow_runs/{run.id}/input/{schema_key}"
        deadline = time.monotonic() + timeout
        while True:
            response = self._request("GET", path)
            if response.status_code == httpx.codes.OK:
                return
            if response.status_code != httpx.codes.NOT_FOUND:
                self._raise_for_status(response)
            if time.monotonic() >= deadline:
                raise OrchestratorError(
                    f"flow run {run.id} ({run.name}) is paused but has not saved its "
                    f"approval form after {timeout:g} s; it may have crashed while pausing. "
                    "Check it in the Prefect UI and try again"
                )
            time.sleep(poll_interval)

    def _flow_names(self, flow_ids: set[str]) -> dict[str, str]:
        if not flow_ids:
            return {}
        body = {"flows": {"id": {"any_": sorted(flow_ids)}}, "limit": _PAGE_SIZE}
        flows = self._json(self._request("POST", "/flows/filter", json=body))
        if not isinstance(flows, list):
            raise self._unexpected("/flows/filter", "a list of flows")
        return {
            str(flow["id"]): str(flow["name"])
            for flow in flows
            if isinstance(flow, Mapping) and "id" in flow and "name" in flow
        }

    def _request(self, method: str, path: str, *, json: Any = None) -> httpx.Response:
        """Send a request; 404s are returned (callers know what they mean), others raise."""
        try:
            response = self._client.request(method, path, json=json)
        except httpx.TimeoutException:
            raise OrchestratorError(
                f"the Prefect API at {self.api_url} did not answer in time; "
                "check the server is running and not overloaded"
            ) from None
        except (httpx.TransportError, httpx.InvalidURL) as exc:
            raise OrchestratorError(
                f"cannot reach the Prefect API at {self.api_url} ({type(exc).__name__}); "
                f"check the server is running: {_START_SERVER_HINT}"
            ) from None
        if response.status_code != httpx.codes.NOT_FOUND:
            self._raise_for_status(response)
        return response

    def _raise_for_status(self, response: httpx.Response) -> None:
        code = response.status_code
        if code < 400:
            return
        if code in (httpx.codes.UNAUTHORIZED, httpx.codes.FORBIDDEN):
            raise OrchestratorError(
                f"the Prefect API at {self.api_url} refused the request (HTTP {code}); "
                "check PREFECT_API_KEY"
            )
        raise OrchestratorError(
            f"the Prefect API at {self.api_url} answered {response.request.method} "
            f"{response.request.url.path} with HTTP {code}: {_error_detail(response)}"
        )

    def _json(self, response: httpx.Response) -> Any:
        if response.status_code == httpx.codes.NOT_FOUND:
            # Only reached for endpoints that always exist: the URL misses the API root.
            raise OrchestratorError(
                f"{self.api_url} answered HTTP 404 for {response.request.url.path}; "
                f"is it the Prefect API root (ending in /api, e.g. {LOCAL_API_URL})?"
            )
        try:
            return response.json()
        except ValueError:
            raise OrchestratorError(
                f"{self.api_url} did not answer {response.request.url.path} with JSON; "
                f"is it the Prefect API root (ending in /api, e.g. {LOCAL_API_URL})?"
            ) from None

    def _unexpected(self, path: str, expected: str) -> OrchestratorError:
        return OrchestratorError(
            f"the Prefect API at {self.api_url} answered {path} without {expected}; "
            "is it a Prefect 3 server?"
        )


_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def _normalise_id(flow_run_id: str) -> str:
    try:
        return str(uuid.UUID(flow_run_id.strip()))
    except ValueError:
        raise FlowRunNotFoundError(
            f"flow run {flow_run_id!r} not found: a flow run id is a UUID such as "
            f"'{uuid.UUID(int=0)}'; {_PENDING_HINT}"
        ) from None


def _error_detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200] or response.reason_phrase
    if isinstance(body, Mapping):
        detail = body.get("detail") or body.get("exception_message") or body
        return str(detail)[:500]
    return str(body)[:500]
