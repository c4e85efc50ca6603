"""The process behind one local online endpoint.

    python -m modelferry.endpoints.local.server --state-db PATH --endpoint NAME

It reads its endpoint's deployments and traffic from the state database, loads each
model once, and serves them with `ScoringApp`. The backend changes the database and then
calls `POST /admin/reload`; a restarted process reloads the same way, so it comes back
serving what it served before.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from modelferry.endpoints.local.state import EndpointRecord, EndpointStateStore
from modelferry.endpoints.spec import TrafficSplit
from modelferry.registry import ModelRegistry, TrackingSettings
from modelferry.serving.app import Scope, ScoringApp
from modelferry.serving.model import ServingModel, load_serving_model
from modelferry.serving.routing import RoutingTable
from modelferry.settings import load_settings
from modelferry.structured_logging import configure_logging

log = logging.getLogger("modelferry.endpoint")


class EndpointServer:
    """Keeps the scoring app's routing table in step with the state database."""

    def __init__(self, store: EndpointStateStore, record: EndpointRecord) -> None:
        """Serve the endpoint `record` describes; models load on the first reload."""
        self.store = store
        self.name = record.name
        self._admin = b"Bearer " + record.admin_token.get_secret_value().encode()
        self.app = ScoringApp(record.name, record.scoring_key, admin=self.handle_admin)
        self._models: dict[tuple[str, str, str], ServingModel] = {}
        self._lock = asyncio.Lock()

    async def handle_admin(self, scope: Scope, body: bytes) -> tuple[int, Any]:
        """Control routes for the backend: reload, state, request counters."""
        token = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
        if not hmac.compare_digest(token, self._admin):
            return 401, {"error": "admin token required"}
        path, method = scope["path"], scope["method"]
        if path == "/admin/reload" and method == "POST":
            async with self._lock:
                return 200, await asyncio.to_thread(self.reload)
        if path == "/admin/state" and method == "GET":
            table = self.app.table
            return 200, {
                "deployments": {n: m.version for n, m in table.models.items()},
                "weights": dict(table.traffic.weights),
                "mirror": dict(table.traffic.mirror),
            }
        if path == "/admin/counters" and method == "GET":
            reading = self.app.telemetry.reading(self.app.table.models)
            return 200, reading.to_json()
        return 404, {"error": f"no admin route {method} {path}"}

    def reload(self) -> dict[str, Any]:
        """Load what the database says should run, smoke-test it, then swap traffic.

        Returns each deployment's outcome ("ready" or the error); a deployment that fails
        is left out of the routing table, so it can never take traffic.
        """
        record = self.store.get_endpoint(self.name)
        if record is None:
            return {"deployments": {}, "error": "endpoint no longer exists"}
        # The state holds the current scoring key: a rotation takes effect here.
        self.app.set_key(record.scoring_key)
        settings = TrackingSettings(record.tracking_uri, record.registry_uri)
        registry = ModelRegistry(settings)
        loaded: dict[str, ServingModel] = {}
        outcome: dict[str, str] = {}
        for deployment in self.store.list_deployments(self.name):
            key = (deployment.name, deployment.model_name, deployment.model_version)
            try:
                model = self._models.get(key)
                if model is None:
                    version = registry.get(deployment.model_name, deployment.model_version)
                    model = load_serving_model(registry, version)
                    smoke_test(model)
                    self._models[key] = model
                    log.info(
                        "deployment=%s loaded %s v%s",
                        deployment.name,
                        deployment.model_name,
                        deployment.model_version,
                    )
                loaded[deployment.name] = model
                outcome[deployment.name] = "ready"
            except Exception as exc:  # reported to the backend, which marks it failed
                outcome[deployment.name] = f"{type(exc).__name__}: {exc}"
                # The reason on the line itself: `endpoints logs --deployment` shows only
                # lines naming the deployment, not the traceback below them.
                log.exception(
                    "deployment=%s failed to load: %s", deployment.name, outcome[deployment.name]
                )
        self._models = {k: m for k, m in self._models.items() if loaded.get(k[0]) is m}
        traffic = record.traffic
        missing = traffic.deployments - set(loaded)
        if missing:
            # Never route to what did not load: keep the split in force if it still can be
            # served, else serve none (503) rather than guess. New deployments are
            # installed either way, so they can be pinned and smoke-tested.
            outcome["traffic"] = f"not applied: deployments not ready {sorted(missing)}"
            traffic = self.app.table.traffic
            if traffic.deployments - set(loaded):
                traffic = TrafficSplit()
        self.app.install(RoutingTable.build(loaded, traffic))
        log.info("routing %s", dict(traffic.weights))
        return {"deployments": outcome}


def smoke_test(model: ServingModel) -> None:
    """Score one row; fail unless the answer is a probability per class summing to 1."""
    row = np.zeros((1, len(model.features)), dtype=np.float64)
    proba = model.predict_proba(row)
    if proba.shape != (1, len(model.class_names)) or not np.isclose(proba.sum(), 1.0):
        raise RuntimeError(f"smoke request gave {proba!r}; expected one probability per class")


def main(argv: list[str] | None = None) -> int:
    """Run one endpoint's server until terminated."""
    parser = argparse.ArgumentParser(prog="python -m modelferry.endpoints.local.server")
    parser.add_argument("--state-db", type=Path, required=True)
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    configure_logging(logging.INFO, load_settings().log_format)
    store = EndpointStateStore(args.state_db)
    record = store.get_endpoint(args.endpoint)
    if record is None:
        print(f"endpoint {args.endpoint!r} is not in {args.state_db}", file=sys.stderr)
        return 2
    server = EndpointServer(store, record)
    started = time.monotonic()
    server.reload()
    log.info("endpoint %s loaded in %.1f s", record.name, time.monotonic() - started)

    # Imported here: uvicorn is only needed once the models are loaded.
    from modelferry.endpoints.local.connections import serve

    # Header/body read timeouts and a connection cap (see connections.py for the
    # defaults and the MODELFERRY_* variables that change them).
    serve(server.app, args.host, record.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
