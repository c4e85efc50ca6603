"""The three servers of the online benchmark, each started in its own process.

- (a) `mlflow models serve --env-manager local`, MLflow's own scoring server;
- (b) `bench.serving.bare_asgi`, the floor: orjson + numpy + `Booster.predict` under uvicorn;
- (c) a modelferry local online endpoint, started through `LocalEndpointBackend`.

Each `start_*` registers the server's shutdown on the given `ExitStack`.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

from bench.common.models import BenchModel
from bench.common.processes import HOST, free_port, start_process, wait_for
from bench.serving.payloads import request_body

ENDPOINT = "bench"


@dataclass
class Server:
    """A running server under test."""

    key: str
    label: str
    url: str
    body_format: str  # "input_data" (Azure ML) or "dataframe_split" (MLflow)
    session: int  # the session id of its processes (their CPU time is summed)
    headers: dict[str, str] = field(default_factory=dict)


def start_mlflow(stack: contextlib.ExitStack, model: BenchModel, workdir: Path) -> Server:
    """(a) `mlflow models serve -m models:/NAME/1 --env-manager local`."""
    port = free_port()
    bin_dir = Path(sys.executable).parent
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": model.tracking_uri,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    log = workdir / "mlflow-serve.log"
    command = [
        str(bin_dir / "mlflow"),
        "models",
        "serve",
        "-m",
        f"models:/{model.name}/{model.version}",
        "--env-manager",
        "local",
        "-h",
        HOST,
        "-p",
        str(port),
    ]
    process = start_process(stack, command, log, env)
    url = f"http://{HOST}:{port}"
    wait_for(f"{url}/ping", process, 180.0, log)
    return Server(
        "mlflow", "(a) mlflow models serve", f"{url}/invocations", "dataframe_split", process.pid
    )


def start_floor(stack: contextlib.ExitStack, model: BenchModel, workdir: Path) -> Server:
    """(b) the bare ASGI floor app."""
    port = free_port()
    log = workdir / "floor.log"
    command = [
        sys.executable, "-m", "bench.serving.bare_asgi",
        "--model", str(model.booster_file), "--host", HOST, "--port", str(port),
    ]  # fmt: skip
    process = start_process(stack, command, log)
    url = f"http://{HOST}:{port}"
    wait_for(f"{url}/", process, 60.0, log)
    return Server("floor", "(b) bare ASGI floor", f"{url}/score", "input_data", process.pid)


def start_endpoint(stack: contextlib.ExitStack, model: BenchModel, workdir: Path) -> Server:
    """(c) a modelferry local endpoint: blue 90 / green 10 of the same model, key auth."""
    from modelferry.endpoints.local import LocalEndpointBackend
    from modelferry.endpoints.spec import DeploymentSpec, EndpointSpec, ModelRef, TrafficSplit
    from modelferry.registry import TrackingSettings

    settings = TrackingSettings.resolve(model.tracking_uri)
    backend = LocalEndpointBackend(workdir / "endpoints", settings)
    stack.callback(backend.delete_endpoint, ENDPOINT)
    backend.create_or_update_endpoint(EndpointSpec(ENDPOINT, description="benchmark"))
    ref = ModelRef(model.name, version=model.version)
    for deployment in ("blue", "green"):
        backend.create_or_update_deployment(ENDPOINT, DeploymentSpec(deployment, ref))
    state = backend.set_traffic(ENDPOINT, TrafficSplit({"blue": 90, "green": 10}))
    key = backend.get_keys(ENDPOINT).get_secret_value()
    record = backend.store.get_endpoint(ENDPOINT)
    if record is None or record.pid is None:
        raise RuntimeError("the endpoint server did not start")
    return Server(
        "modelferry",
        "(c) modelferry endpoint",
        state.scoring_uri,
        "input_data",
        record.pid,
        {"Authorization": f"Bearer {key}"},
    )


#: How to start each server, by key, in the order they are started.
STARTERS = {"mlflow": start_mlflow, "floor": start_floor, "modelferry": start_endpoint}


def served_by_deployment(server: Server) -> dict[str, int]:
    """Requests answered per deployment, from the endpoint's Prometheus counters."""
    url = server.url.rsplit("/", 1)[0] + "/metrics"
    text = httpx.get(url, headers=server.headers, timeout=10).text
    served: dict[str, int] = {}
    counter = re.compile(r'^modelferry_requests_total\{.*deployment="([^"]+)".*\} (\d+)$', re.M)
    for found in counter.finditer(text):
        served[found.group(1)] = served.get(found.group(1), 0) + int(found.group(2))
    return served


def check_answers(server: Server, model: BenchModel, sizes: Iterable[int]) -> None:
    """One request of each size must succeed and, where probabilities come back, be right."""
    import lightgbm

    booster = lightgbm.Booster(model_file=str(model.booster_file))
    for rows in sorted(set(sizes)):
        headers = {"Content-Type": "application/json", **server.headers}
        payload = request_body(model, rows, server.body_format)
        response = httpx.post(server.url, content=payload, headers=headers, timeout=60)
        if response.status_code != 200:
            raise RuntimeError(f"{server.label}: {response.status_code} {response.text[:300]}")
        answer = np.asarray(response.json()["predictions"], dtype=np.float64)
        expected = np.asarray(booster.predict(model.rows[np.arange(rows) % len(model.rows)]))
        if server.key == "mlflow":  # MLflow's pyfunc answers class labels
            got, want = answer.ravel(), (expected > 0.5).astype(np.float64)
        else:
            got, want = (answer[:, 1] if answer.ndim == 2 else answer), expected
        if got.shape != want.shape or not np.allclose(got, want, atol=1e-9):
            raise RuntimeError(f"{server.label}: wrong predictions for {rows} row(s)")
