"""The command: start or pick up a flow run, follow it, and turn its end into an exit code.

See the package docstring for the options and the exit codes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import re
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Final
from uuid import UUID

import httpx
from prefect.client.orchestration import PrefectClient, get_client
from prefect.client.schemas.filters import (
    LogFilter,
    LogFilterFlowRunId,
    LogFilterTimestamp,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.client.schemas.sorting import DeploymentSort, LogSort
from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError
from prefect.settings import get_current_settings
from prefect.types import DateTime
from prefect.utilities.urls import url_for

from deployments.ci_run.parameters import (
    UsageError,
    collect_raw_parameters,
    map_parameters,
    secret_parameter_names,
)
from modelferry.approval.pause import reviewer_deadline

EXIT_COMPLETED: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
EXIT_TIMEOUT: Final = 3
EXIT_API: Final = 4

BUILD_TAG_PREFIX: Final = "ci-build:"
#: The Azure DevOps output variables set for later stages (under `TF_BUILD`).
OUTPUT_VARIABLES: Final = ("FLOW_RUN_ID", "FLOW_RUN_URL", "FLOW_RUN_STATE")
#: The CI variables passed into the run's environment, where lineage tags read them.
BUILD_ENV_VARS: Final = ("BUILD_BUILDID", "BUILD_SOURCEVERSION")

_FAILED_STATES: Final = {StateType.FAILED, StateType.CRASHED, StateType.CANCELLED}
_NOT_STARTED: Final = {StateType.SCHEDULED, StateType.PENDING}
_PAGE: Final = 200
_LOG_LOOKBACK: Final = timedelta(seconds=60)
_DRAIN_POLLS: Final = 5


# -- the run ---------------------------------------------------------------------------------


def exit_code_for(state: StateType | None, *, exit_on_pause: bool = False) -> int:
    """The exit code for a run that stopped being watched in `state`."""
    if state is StateType.COMPLETED:
        return EXIT_COMPLETED
    if state in _FAILED_STATES:
        return EXIT_FAILED
    if state is StateType.PAUSED and exit_on_pause:
        return EXIT_COMPLETED
    return EXIT_TIMEOUT


def azure_devops_outputs(values: Mapping[str, str]) -> list[str]:
    """Logging commands that set Azure DevOps output variables for later jobs and stages."""
    return [f"##vso[task.setvariable variable={k};isOutput=true]{v}" for k, v in values.items()]


def build_context(
    build_id: str | None, environ: Mapping[str, str]
) -> tuple[list[str], dict[str, str]]:
    """The flow run tags and environment that carry the CI build into the run."""
    env = {name: environ[name] for name in BUILD_ENV_VARS if environ.get(name)}
    if build_id:
        env["BUILD_BUILDID"] = build_id
    tags = [f"{BUILD_TAG_PREFIX}{env['BUILD_BUILDID']}"] if "BUILD_BUILDID" in env else []
    return tags, env


class RunWatcher:
    """Polls one flow run, printing its new log lines, until it settles or time runs out.

    Args:
        client: the Prefect API client to poll with.
        flow_run_id: the flow run to watch.
        poll_interval: seconds between polls.
    """

    def __init__(self, client: PrefectClient, flow_run_id: UUID, poll_interval: float) -> None:
        self._client = client
        self._id = flow_run_id
        self._poll = poll_interval
        self._printed: set[UUID] = set()
        self._latest: DateTime | None = None

    async def wait(self, timeout: float, *, stop_on_pause: bool) -> FlowRun:
        """Wait until the run is final (or paused, with `stop_on_pause`) or `timeout` passes."""
        deadline = time.monotonic() + timeout
        while True:
            run = await self._client.read_flow_run(self._id)
            await self.print_new_logs()
            state = run.state
            settled = state is not None and (
                state.is_final() or (stop_on_pause and state.type is StateType.PAUSED)
            )
            if settled:
                await self._drain_logs()
                return run
            if time.monotonic() >= deadline:
                return run
            await asyncio.sleep(min(self._poll, max(0.0, deadline - time.monotonic())))

    async def print_new_logs(self) -> int:
        """Print the log lines not printed yet, oldest first; returns how many."""
        # Logs arrive in batches, not always in timestamp order: look back a little and
        # skip what was printed.
        since = self._latest - _LOG_LOOKBACK if self._latest else None
        log_filter = LogFilter(
            flow_run_id=LogFilterFlowRunId(any_=[self._id]),
            timestamp=LogFilterTimestamp(after_=since) if since else None,
        )
        printed = 0
        offset = 0
        while True:
            logs = await self._client.read_logs(
                log_filter=log_filter, limit=_PAGE, offset=offset, sort=LogSort.TIMESTAMP_ASC
            )
            for log in logs:
                if log.id in self._printed:
                    continue
                self._printed.add(log.id)
                self._latest = max(self._latest or log.timestamp, log.timestamp)
                level = logging.getLevelName(log.level)
                # Tracebacks span lines; indent them all so they read as one entry.
                message = log.message.replace("\n", "\n" + " " * 19)
                print(f"  {log.timestamp:%H:%M:%S} {level:<7} {message}", flush=True)
                printed += 1
            offset += len(logs)
            if len(logs) < _PAGE:
                return printed

    async def _drain_logs(self) -> None:
        # A flow process ships its last log lines just after its final state.
        quiet = 0
        for _ in range(_DRAIN_POLLS):
            await asyncio.sleep(1.0)
            quiet = 0 if await self.print_new_logs() else quiet + 1
            if quiet == 2:
                return


async def start_run(client: PrefectClient, args: argparse.Namespace) -> FlowRun:
    """Create a flow run of the deployment named on the command line, typed and tagged."""
    name: str = args.deployment
    try:
        deployment = await client.read_deployment_by_name(name)
    except ObjectNotFound:
        known = await _deployment_names(client)
        listing = ", ".join(known) if known else "none"
        raise UsageError(f"no deployment {name!r} on the server; it has: {listing}") from None
    schema = deployment.parameter_openapi_schema or {}
    raw = collect_raw_parameters(args.param, os.environ, args.params_from_env)
    parameters = map_parameters(raw, schema, deployment.parameters, name)
    tags, env = build_context(args.build_id, os.environ)
    try:
        run = await client.create_flow_run_from_deployment(
            deployment.id,
            parameters=parameters,
            tags=tags,
            job_variables={"env": env} if env else None,
        )
    except PrefectHTTPStatusError as exc:
        if exc.response.status_code in (409, 422):
            detail = _detail(exc.response)
            raise UsageError(f"{name}: Prefect refused the parameters: {detail}") from None
        raise
    secrets = secret_parameter_names(schema)
    shown = {k: "********" if k in secrets else v for k, v in parameters.items()}
    print(f"Started flow run {run.name!r} ({run.id}) of {name}", flush=True)
    print(f"  parameters: {json.dumps(shown, default=str)}", flush=True)
    if tags:
        print(f"  tags: {', '.join(tags)}", flush=True)
    return run


async def run_command(args: argparse.Namespace) -> int:
    """Start (or pick up) the run, watch it and report; returns the exit code."""
    async with get_client() as client:
        if args.flow_run_id:
            run = await client.read_flow_run(args.flow_run_id)
            print(f"Watching flow run {run.name!r} ({run.id})", flush=True)
        else:
            run = await start_run(client, args)
        url = url_for(run) or f"{client.api_url}flow_runs/{run.id}"
        print(f"  URL: {url}", flush=True)
        watcher = RunWatcher(client, run.id, args.poll_interval)
        run = await watcher.wait(args.watch_timeout, stop_on_pause=args.exit_on_pause)
        return report(run, url, args.watch_timeout, exit_on_pause=args.exit_on_pause)


def report(run: FlowRun, url: str, timeout: float, *, exit_on_pause: bool) -> int:
    """Print the run's final word and the pipeline outputs; returns the exit code."""
    state = run.state
    state_type = state.type if state else None
    name = (state.name if state else None) or "no state"
    code = exit_code_for(state_type, exit_on_pause=exit_on_pause)
    message = (state.message or "").strip() if state else ""
    print(f"Flow run {run.name!r} is {name}" + (f": {message}" if message else ""), flush=True)
    if state_type is StateType.PAUSED:
        waits_for_input = bool(state and state.state_details.run_input_keyset)
        how = (
            f"`modelferry approve {run.id} --reviewer NAME [--reject]`"
            if waits_for_input
            else f"the Prefect API (POST /flow_runs/{run.id}/resume)"
        )
        # The deadline the run logged for its reviewer; the server's is later.
        until = (
            reviewer_deadline(state.state_details.pause_key, state.state_details.pause_timeout)
            if state
            else None
        )
        print(
            f"It is paused waiting for approval: resume it in the Prefect UI at {url} "
            f"(Resume), or with {how}"
            + (f"; it waits until {until:%Y-%m-%d %H:%M:%S %Z}" if until else ""),
            flush=True,
        )
    elif code == EXIT_TIMEOUT:
        hint = (
            "nothing picked it up: is a worker polling its work pool, or `make serve` running?"
            if state_type in _NOT_STARTED
            else f"it keeps running; cancel it with `prefect flow-run cancel {run.id}`"
        )
        print(f"Timed out after {timeout:g} s while it was {name}; {hint}", flush=True)
    if os.environ.get("TF_BUILD"):
        outputs = dict(zip(OUTPUT_VARIABLES, (str(run.id), url, name), strict=True))
        for line in azure_devops_outputs(outputs):
            print(line, flush=True)
        if code == EXIT_FAILED:
            print(f"##vso[task.logissue type=error]{run.name} {name}: {message}", flush=True)
    return code


async def _deployment_names(client: PrefectClient) -> list[str]:
    deployments = await client.read_deployments(limit=_PAGE, offset=0, sort=DeploymentSort.NAME_ASC)
    # One read per flow: 3.8.8's read_flows sends null filters, which its server rejects.
    flow_names = {
        flow_id: (await client.read_flow(flow_id)).name
        for flow_id in {d.flow_id for d in deployments}
    }
    return sorted(f"{flow_names.get(d.flow_id, d.flow_id)}/{d.name}" for d in deployments)


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:500]
    detail = body.get("detail", body) if isinstance(body, dict) else body
    return str(detail)[:1000]


# -- command line ----------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the command line; argparse exits 2 on a bad one."""
    parser = argparse.ArgumentParser(
        prog="python -m deployments.ci_run",
        description="Run a Prefect deployment from CI and exit 0 only when it Completed.",
    )
    parser.add_argument("deployment", nargs="?", help="flow-name/deployment-name")
    parser.add_argument(
        "--param", action="append", default=[], metavar="NAME=VALUE", help="a parameter"
    )
    parser.add_argument(
        "--params-from-env",
        metavar="PREFIX",
        help="take parameters from environment variables PREFIX<NAME>",
    )
    parser.add_argument(
        "--watch-timeout", type=_positive, required=True, help="seconds to wait for the run"
    )
    parser.add_argument(
        "--build-id",
        default=os.environ.get("BUILD_BUILDID") or None,
        help="the CI build id (default $BUILD_BUILDID)",
    )
    parser.add_argument(
        "--exit-on-pause",
        action="store_true",
        help="exit 0 once the run pauses for approval (the approval happens elsewhere)",
    )
    parser.add_argument(
        "--flow-run-id", type=UUID, help="watch this existing run instead of starting one"
    )
    parser.add_argument("--poll-interval", type=_positive, default=2.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if (args.deployment is None) == (args.flow_run_id is None):
        parser.error("give either a DEPLOYMENT or --flow-run-id")
    if args.deployment is not None and not re.fullmatch(r"[^/]+/[^/]+", args.deployment):
        parser.error(f"{args.deployment!r} is not of the form flow-name/deployment-name")
    if args.flow_run_id and (args.param or args.params_from_env):
        parser.error("--param and --params-from-env only apply when starting a deployment")
    return args


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number of seconds")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit code."""
    args = parse_args(argv)
    api_url = get_current_settings().api.url
    if not api_url:
        print(
            "error: PREFECT_API_URL is not set; point it at the Prefect server "
            "(e.g. from the pipeline's variable group)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    try:
        return asyncio.run(run_command(args))
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ObjectNotFound:
        print(f"error: no flow run {args.flow_run_id} on {api_url}", file=sys.stderr)
        return EXIT_USAGE
    except PrefectHTTPStatusError as exc:
        code = exc.response.status_code
        print(
            f"error: the Prefect API at {api_url} answered HTTP {code}: {_detail(exc.response)}"
            + ("; check PREFECT_API_KEY" if code in (401, 403) else ""),
            file=sys.stderr,
        )
        return EXIT_API
    except httpx.HTTPError as exc:
        print(
            f"error: cannot reach the Prefect API at {api_url} ({type(exc).__name__}); "
            "check PREFECT_API_URL and that the server is running",
            file=sys.stderr,
        )
        return EXIT_API
