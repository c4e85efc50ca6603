"""`LocalEndpointBackend`: online endpoints as server processes on this machine."""

from __future__ import annotations

import fcntl
import secrets
import socket
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr

from modelferry.endpoints.backend import EndpointBackend, TrafficRollback
from modelferry.endpoints.counters import (
    CounterReading,
    MetricsMark,
    StepMetrics,
    metrics_between,
)
from modelferry.endpoints.local import process
from modelferry.endpoints.local.state import DeploymentRecord, EndpointRecord, EndpointStateStore
from modelferry.endpoints.spec import (
    DeploymentMetrics,
    DeploymentSpec,
    DeploymentState,
    DeploymentStatus,
    EndpointSpec,
    EndpointState,
    TrafficSplit,
)
from modelferry.errors import (
    DeploymentFailedError,
    EndpointError,
    EndpointNotFoundError,
    InvalidEndpointSpecError,
    RegistryError,
)
from modelferry.registry import ModelRegistry, TrackingSettings
from modelferry.registry.tracking import display_uri


class LocalEndpointBackend(EndpointBackend):
    """One uvicorn process per endpoint, serving every deployment of it in-process.

    State lives in `home/endpoints.db`; logs in `home/logs/<endpoint>.log`. Processes
    outlive the Python process that started them; `ensure_running` restarts the ones a
    reboot or crash took away.
    """

    display_name = "local"

    def __init__(
        self,
        home: Path,
        settings: TrackingSettings,
        host: str = "127.0.0.1",
        start_timeout_s: float = 60.0,
    ) -> None:
        """Manage endpoints recorded under `home`, loading models through `settings`."""
        self.home = home
        self.settings = settings
        self.host = host
        self.start_timeout_s = start_timeout_s
        self.store = EndpointStateStore(home / "endpoints.db")

    # -- endpoints ---------------------------------------------------------------------

    def create_or_update_endpoint(self, spec: EndpointSpec) -> EndpointState:
        """Record the endpoint and make sure its server runs (seconds)."""
        if not spec.name:
            raise InvalidEndpointSpecError("an endpoint needs a name")
        record = self.store.get_endpoint(spec.name)
        if record is None:
            record = EndpointRecord(
                name=spec.name,
                port=process.free_port(self.host),
                pid=None,
                scoring_key=SecretStr(secrets.token_urlsafe(32)),
                admin_token=SecretStr(secrets.token_urlsafe(32)),
                description=spec.description,
                tags=dict(spec.tags),
                traffic=TrafficSplit(),
                tracking_uri=self.settings.tracking_uri,
                registry_uri=self.settings.registry_uri,
            )
        else:
            self._check_same_store(record)
            record = _replace(record, description=spec.description, tags=dict(spec.tags))
        self.store.put_endpoint(record)
        self._ensure_server(record)
        return self.get_endpoint(spec.name)

    def get_endpoint(self, name: str) -> EndpointState:
        """The endpoint as recorded, with each deployment's status."""
        record = self._record(name)
        running = process.is_alive(self._server(record))
        deployments = tuple(
            DeploymentState(
                d.name,
                d.model_name,
                d.model_version,
                d.status if running or d.status == "failed" else "stopped",
                d.detail,
            )
            for d in self.store.list_deployments(name)
        )
        return EndpointState(name, f"{self._url(record)}/score", deployments, record.traffic)

    def list_endpoints(self) -> list[EndpointState]:
        """Every recorded endpoint."""
        return [self.get_endpoint(r.name) for r in self.store.list_endpoints()]

    def delete_endpoint(self, name: str) -> None:
        """Stop the server and forget the endpoint; nothing to do if it does not exist.

        A traffic change under way finishes first, so none of it outlives the endpoint.
        """
        with self._traffic_lock():
            record = self.store.get_endpoint(name)
            if record is None:
                return
            process.stop_server(self._server(record))
            self.store.delete_endpoint(name)

    def ensure_running(self, name: str) -> EndpointState:
        """Start the endpoint's server if it is not running (after a reboot or crash)."""
        self._ensure_server(self._record(name))
        return self.get_endpoint(name)

    def restart_endpoint(self, name: str) -> EndpointState:
        """Stop and start the server; it comes back serving what the state says."""
        record = self._record(name)
        process.stop_server(self._server(record))
        self._ensure_server(_replace(record, pid=None, pid_started_at=None))
        return self.get_endpoint(name)

    # -- deployments -------------------------------------------------------------------

    def create_or_update_deployment(
        self, endpoint: str, spec: DeploymentSpec, timeout_s: float = 600.0
    ) -> DeploymentState:
        """Load the model into the endpoint's server with 0% traffic and smoke-test it."""
        record = self._record(endpoint)
        self._check_same_store(record)
        version = self._resolve(spec)
        existing = next(
            (d for d in self.store.list_deployments(endpoint) if d.name == spec.name), None
        )
        unchanged = (
            existing is not None
            and existing.status == "ready"
            and (existing.model_name, existing.model_version) == (spec.model.name, version)
        )
        if unchanged:
            # "ready" in the state file only holds while the server runs (think reboot).
            self._ensure_server(record)
            return DeploymentState(spec.name, spec.model.name, version, "ready")
        if existing is not None and record.traffic.deployments & {spec.name}:
            raise InvalidEndpointSpecError(
                f"deployment {spec.name!r} takes traffic; deploy the new version under "
                "another name and move traffic to it"
            )
        self.store.put_deployment(
            DeploymentRecord(endpoint, spec.name, spec.model.name, version, "creating")
        )
        self._ensure_server(record)
        outcome = self._admin(record, "POST", "/admin/reload", timeout_s)
        result = str(outcome.get("deployments", {}).get(spec.name, "not loaded"))
        status: DeploymentStatus = "ready" if result == "ready" else "failed"
        detail = "" if status == "ready" else result
        self.store.put_deployment(
            DeploymentRecord(endpoint, spec.name, spec.model.name, version, status, detail)
        )
        if status == "ready":
            self.store.mark_release(endpoint, [spec.name])
        if status == "failed":
            raise DeploymentFailedError(
                f"deployment {spec.name!r} of endpoint {endpoint!r} ({spec.model.name} "
                f"v{version}) failed: {detail}; it takes no traffic. Logs: "
                f"modelferry endpoints logs {endpoint}",
                endpoint=endpoint,
                deployment=spec.name,
                model_name=spec.model.name,
                model_version=version,
            )
        return DeploymentState(spec.name, spec.model.name, version, "ready")

    def delete_deployment(self, endpoint: str, name: str) -> None:
        """Unload and forget one deployment; refused while it takes traffic."""
        record = self.store.get_endpoint(endpoint)
        if record is None:
            return
        if name in record.traffic.deployments:
            raise InvalidEndpointSpecError(
                f"deployment {name!r} still takes traffic {dict(record.traffic.weights)}; "
                "move its traffic elsewhere first"
            )
        if not any(d.name == name for d in self.store.list_deployments(endpoint)):
            return
        self.store.delete_deployment(endpoint, name)
        if process.is_alive(self._server(record)):
            self._admin(record, "POST", "/admin/reload", 60.0)

    def set_traffic(self, endpoint: str, traffic: TrafficSplit) -> EndpointState:
        """Swap the routing table in one step; in-flight requests are not dropped.

        The split it replaces is remembered for `rollback_traffic`; the first change that
        gives a newly deployed version traffic is remembered as the start of its release.
        """
        with self._traffic_lock():
            return self._apply_traffic(endpoint, traffic)

    def rollback_traffic(self, endpoint: str, steps: int | None = None) -> TrafficRollback:
        """Undo the last release, or the last `steps` traffic changes (see the interface).

        Raises:
            EndpointNotFoundError: the endpoint does not exist.
            InvalidEndpointSpecError: nothing (or fewer than `steps` changes) to undo.
        """
        with self._traffic_lock():
            return self._rollback_traffic(endpoint, steps)

    def _rollback_traffic(self, endpoint: str, steps: int | None) -> TrafficRollback:
        record = self._record(endpoint)
        history = self.store.traffic_history(endpoint)
        if steps is not None:
            if steps < 1:
                raise InvalidEndpointSpecError(f"--steps must be 1 or more; got {steps}")
            if steps > len(history):
                raise InvalidEndpointSpecError(
                    f"endpoint {endpoint!r} has {len(history)} recorded traffic change(s); "
                    f"cannot undo {steps}"
                )
            count, release = steps, None
        else:
            count = next((i + 1 for i, c in enumerate(history) if c.release), 0)
            if count == 0:
                hint = (
                    f"; `--steps N` undoes single changes ({len(history)} recorded)"
                    if history
                    else ""
                )
                raise InvalidEndpointSpecError(
                    f"endpoint {endpoint!r} has no release to roll back: no traffic change "
                    f"since a new model version was deployed{hint}"
                )
            release = history[count - 1].release
        restored = history[count - 1].replaced
        if not any(restored.weights.values()) and any(record.traffic.weights.values()):
            # Before the endpoint's first release nothing served: "undoing" it is an outage.
            raise InvalidEndpointSpecError(
                f"rolling back would leave endpoint {endpoint!r} with no traffic: before "
                f"{'that change' if steps else 'this release'} nothing served. Move traffic "
                f"with `modelferry endpoints traffic {endpoint} NAME=PERCENT`, or stop the "
                f"endpoint with `modelferry endpoints delete {endpoint}`"
            )
        state = self._apply_traffic(endpoint, restored, remember=False)
        self.store.drop_traffic_history(endpoint, count)
        if any(change.release for change in history[:count]):
            # The release is undone: moving traffic back onto its version starts it again.
            back = [
                n for n, w in record.traffic.weights.items() if w and not restored.weights.get(n)
            ]
            self.store.mark_release(endpoint, back)
        return TrafficRollback(state, record.traffic, count, release)

    @contextmanager
    def _traffic_lock(self) -> Iterator[None]:
        """Hold the lock that makes traffic changes, rollbacks and deletions one at a time.

        The lock holds across processes. Each of these reads the split and its history,
        changes both, and must not be interleaved with another (two rollbacks would both
        undo the same change; a deletion would leave a change's history behind).
        """
        with (self.home / "traffic.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            yield

    def _apply_traffic(
        self, endpoint: str, traffic: TrafficSplit, remember: bool = True
    ) -> EndpointState:
        record = self._record(endpoint)
        deployments = {d.name: d for d in self.store.list_deployments(endpoint)}
        unknown = sorted(traffic.deployments - set(deployments))
        if unknown:
            raise EndpointNotFoundError(
                f"endpoint {endpoint!r} has no deployment {unknown}; it has {sorted(deployments)}",
                endpoint=endpoint,
                deployment=unknown[0],
            )
        not_ready = sorted(n for n in traffic.deployments if deployments[n].status != "ready")
        if not_ready:
            raise InvalidEndpointSpecError(
                f"deployments {not_ready} are not ready; traffic moves only to ready ones"
            )
        previous = record.traffic
        updated = _replace(record, traffic=traffic)
        self.store.put_endpoint(updated)
        self._ensure_server(updated)
        outcome = self._admin(updated, "POST", "/admin/reload", 60.0)
        if "traffic" in outcome.get("deployments", {}):
            self.store.put_endpoint(_replace(updated, traffic=previous))
            raise InvalidEndpointSpecError(str(outcome["deployments"]["traffic"]))
        if remember and previous != traffic:
            labels = {n: f"{n} (v{d.model_version})" for n, d in deployments.items()}
            self.store.push_traffic(endpoint, previous, traffic, labels)
        return self.get_endpoint(endpoint)

    # -- use and observation -----------------------------------------------------------

    def get_keys(self, endpoint: str) -> SecretStr:
        """The scoring key."""
        return self._record(endpoint).scoring_key

    def rotate_key(self, endpoint: str) -> SecretStr:
        """Make a new scoring key; the running server takes it before this returns.

        From then on only the new key is accepted. A stopped server starts with it.

        Raises:
            EndpointNotFoundError: the endpoint does not exist.
            EndpointError: the server did not confirm taking the new key (it is stored),
                or another rotation stored its key after this one.
        """
        record = self._record(endpoint)
        key = SecretStr(secrets.token_urlsafe(32))
        self.store.set_scoring_key(endpoint, key)
        if process.is_alive(self._server(record)):
            try:
                self._admin(record, "POST", "/admin/reload", 60.0)
            except EndpointError as exc:
                raise EndpointError(
                    f"endpoint {endpoint!r} has a new scoring key, but its server did not "
                    f"confirm taking it ({exc}); until it reloads it may accept the old key "
                    f"only. `modelferry endpoints key {endpoint}` prints the new key"
                ) from exc
        if self._record(endpoint).scoring_key != key:
            # Another rotation stored its key after this one: that is the key in force.
            raise EndpointError(
                f"endpoint {endpoint!r}: its scoring key was rotated again meanwhile, by "
                f"another command; `modelferry endpoints key {endpoint}` prints the key in force"
            )
        return key

    def invoke(
        self, endpoint: str, payload: Mapping[str, Any], deployment: str | None = None
    ) -> Any:
        """POST one request to the endpoint's `/score`, as a client would."""
        record = self._record(endpoint)
        headers = {"Authorization": f"Bearer {record.scoring_key.get_secret_value()}"}
        if deployment is not None:
            headers["azureml-model-deployment"] = deployment
        response = httpx.post(
            f"{self._url(record)}/score", json=dict(payload), headers=headers, timeout=30.0
        )
        if response.status_code != 200:
            raise EndpointError(
                f"endpoint {endpoint!r} answered {response.status_code}: {response.text[:300]}"
            )
        return response.json()

    def get_metrics(self, endpoint: str, since: datetime) -> dict[str, DeploymentMetrics]:
        """Routed requests, errors and p99 latency per deployment since `since`.

        The server counts from its start on, so this answers only for a `since` before
        that start (an aware datetime; naive is taken as UTC); `mark_metrics` and
        `get_step_metrics` measure any period.

        Raises:
            EndpointError: `since` is after the server started.
        """
        reading = self._read_counters(endpoint)
        start = since if since.tzinfo is not None else since.replace(tzinfo=UTC)
        if start > reading.started:
            raise EndpointError(
                f"endpoint {endpoint!r} counts requests since its server started "
                f"({reading.started.isoformat(timespec='seconds')}), not since "
                f"{start.isoformat(timespec='seconds')}: take `mark_metrics` when the period "
                "starts and read `get_step_metrics` when it ends"
            )
        return dict(metrics_between(_nothing_counted(reading), reading).deployments)

    def mark_metrics(self, endpoint: str) -> MetricsMark:
        """The time now and the server's counters, for `get_step_metrics`."""
        return MetricsMark(datetime.now(UTC), self._read_counters(endpoint))

    def get_step_metrics(self, endpoint: str, mark: MetricsMark) -> StepMetrics:
        """Routed requests, errors and p99 per deployment since `mark`.

        They are the difference of the server's counters, exact however many requests came.

        If the server restarted since the mark, what it counted from the restart on is
        measured, and `StepMetrics.restarted` says when that was.
        """
        end = self._read_counters(endpoint)
        start = mark.counters if mark.counters is not None else _nothing_counted(end)
        return metrics_between(start, end)

    def _read_counters(self, endpoint: str) -> CounterReading:
        record = self._record(endpoint)
        answer = self._admin(record, "GET", "/admin/counters", 10.0)
        try:
            return CounterReading.from_json(answer)
        except ValueError as exc:
            raise EndpointError(
                f"endpoint {endpoint!r} answered its counters in an unknown shape ({exc}); "
                "its server may run an older modelferry: restart it (`restart_endpoint`)"
            ) from exc

    def get_logs(self, endpoint: str, deployment: str, lines: int = 100) -> str:
        """The end of the endpoint server's log (all its deployments share one process).

        With `deployment`, only its lines: its request log and its load errors.
        """
        self._record(endpoint)
        return process.tail(self._log_path(endpoint), lines, deployment or None)

    # -- internals ---------------------------------------------------------------------

    def _record(self, name: str) -> EndpointRecord:
        record = self.store.get_endpoint(name)
        if record is None:
            known = [r.name for r in self.store.list_endpoints()]
            raise EndpointNotFoundError(
                f"no local endpoint {name!r}; known endpoints: {known}", endpoint=name
            )
        return record

    def _check_same_store(self, record: EndpointRecord) -> None:
        """Refuse to deploy from another MLflow store than the one the endpoint loads from.

        The server loads every deployment from the store recorded with the endpoint: a
        version number resolved in another store would name a different model.
        """
        recorded = (record.tracking_uri, record.registry_uri or record.tracking_uri)
        ours = (
            self.settings.tracking_uri,
            self.settings.registry_uri or self.settings.tracking_uri,
        )
        if recorded == ours:
            return
        raise InvalidEndpointSpecError(
            f"endpoint {record.name!r} serves models of the MLflow store "
            f"{_store_label(*recorded)}, not of {_store_label(*ours)}: the same version "
            "number there is another model. Deploy under another endpoint name, or remove "
            f"this one first: modelferry endpoints delete {record.name}"
        )

    def _resolve(self, spec: DeploymentSpec) -> str:
        registry = ModelRegistry(self.settings)
        if spec.model.version is not None:
            try:
                return registry.get(spec.model.name, spec.model.version).version
            except RegistryError as exc:
                raise EndpointNotFoundError(f"model {spec.model.uri} does not exist") from exc
        found = registry.get_by_alias(spec.model.name, str(spec.model.alias))
        if found is None:
            raise EndpointNotFoundError(f"model {spec.model.uri} does not exist")
        return found.version

    def _server(self, record: EndpointRecord) -> process.ServerProcess | None:
        if record.pid is None:
            return None
        return process.ServerProcess(
            record.pid, record.pid_started_at, record.name, self.store.path
        )

    def _url(self, record: EndpointRecord) -> str:
        return f"http://{self.host}:{record.port}"

    def _log_path(self, endpoint: str) -> Path:
        return self.home / "logs" / f"{endpoint}.log"

    def _ensure_server(self, record: EndpointRecord) -> None:
        if process.is_alive(self._server(record)):
            return
        if not _port_free(self.host, record.port):
            record = _replace(record, port=process.free_port(self.host))
        log_path = self._log_path(record.name)
        server = process.start_server(self.store.path, record.name, self.host, log_path)
        record = _replace(record, pid=server.pid, pid_started_at=server.started_at)
        self.store.put_endpoint(record)
        process.wait_until_live(self._url(record), server, self.start_timeout_s, log_path)

    def _admin(self, record: EndpointRecord, method: str, path: str, timeout_s: float) -> Any:
        token = record.admin_token.get_secret_value()
        try:
            response = httpx.request(
                method,
                f"{self._url(record)}{path}",
                headers={"Authorization": f"Bearer {token}"},
                timeout=timeout_s,
            )
        except httpx.HTTPError as exc:
            # The server runs (its pid checked out) but does not answer: hung or overloaded.
            raise EndpointError(
                f"the server of endpoint {record.name!r} did not answer {method} {path} "
                f"({type(exc).__name__}: {exc}); its log may say why: "
                f"modelferry endpoints logs {record.name}",
                endpoint=record.name,
            ) from exc
        if response.status_code != 200:
            raise DeploymentFailedError(
                f"endpoint {record.name!r} refused {method} {path}: {response.text[:300]}",
                endpoint=record.name,
            )
        return response.json()


def _replace(record: EndpointRecord, **changes: Any) -> EndpointRecord:
    return replace(record, **changes)


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _nothing_counted(reading: CounterReading) -> CounterReading:
    """A reading of `reading`'s server before it counted anything."""
    return replace(reading, deployments={})


def _store_label(tracking_uri: str, registry_uri: str) -> str:
    if registry_uri == tracking_uri:
        return display_uri(tracking_uri)
    return f"{display_uri(tracking_uri)} (registry {display_uri(registry_uri)})"
