"""Online scoring throughput and latency: MLflow's server, the floor, and modelferry.

    .venv/bin/python -m bench.serving [--rounds 3] [--duration 10] [--json out.json]

Trains the benchmark model (LightGBM, 100 trees, up to 31 leaves, 30 features), logs and
registers it in a temporary MLflow SQLite store, then starts three servers of it:

- (a) `mlflow models serve --env-manager local` (MLflow's own scoring server);
- (b) `bench.bare_asgi`, the floor: orjson + numpy + `Booster.predict` under uvicorn;
- (c) a modelferry local online endpoint (key auth, validation, blue 90 / green 10 over
  two deployments of the model, metrics on), started through `LocalEndpointBackend`.

Each scenario loads each server with wrk, one server at a time, after a warm-up; rounds
rotate the server order so that drift in the machine's load hits every server alike.
Other work on the machine slows every server, so read the ratios, not the absolutes; the
"others" column says how much CPU the rest of the machine used during each run.
Every server process is stopped at exit, also on failure or Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from importlib.metadata import version as installed_version
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
import numpy as np
import orjson

REPO = Path(__file__).resolve().parent.parent
MODEL_NAME = "bench-lightgbm"
ENDPOINT = "bench"
HOST = "127.0.0.1"

# The targets this benchmark checks, as (name, threshold).
TARGET_ONE_ROW_VS_MLFLOW = 30.0
TARGET_P99_MS = 5.0
TARGET_VS_FLOOR = 0.8
TARGET_BATCH_VS_MLFLOW = 4.0
# Interleaved batches per app in --profile; the minimum is the least disturbed by others.
PROFILE_BATCHES = 40


# -- what is measured ------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    """One wrk load shape."""

    key: str
    label: str
    rows: int
    threads: int
    connections: int


SCENARIOS = (
    Scenario("one_row_c8", "1 row, 8 connections", 1, 2, 8),
    Scenario("one_row_c1", "1 row, 1 connection", 1, 1, 1),
    Scenario("rows_1000_c4", "1,000 rows, 4 connections", 1000, 2, 4),
)


@dataclass
class Server:
    """A running server under test."""

    key: str
    label: str
    url: str
    body_format: str  # "input_data" (Azure ML) or "dataframe_split" (MLflow)
    session: int  # the session id of its processes (their CPU time is summed)
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class WrkResult:
    """What one wrk run measured, plus CPU accounting around it."""

    server: str
    scenario: str
    round: int
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int
    socket_errors: int
    server_cpu_us_per_request: float
    server_cpu_percent: float  # of one core
    others_cpu_percent: float  # of the whole machine: neither the server nor wrk


# -- the machine -----------------------------------------------------------------------


def machine_info() -> dict[str, str]:
    """Cores, CPU model, memory, Python and library versions, load average."""
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory = "unknown"
    with contextlib.suppress(OSError, IndexError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    wrk_lines = (wrk.stdout or wrk.stderr).splitlines()
    info = {
        "nproc": str(len(os.sched_getaffinity(0))),
        "cpu": model,
        "memory": memory,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "wrk": wrk_lines[0].split(" [")[0] if wrk_lines else "unknown",
        "load average at start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }
    for package in ("lightgbm", "mlflow", "uvicorn", "uvloop", "httptools", "orjson", "numpy"):
        info[package] = installed_version(package)
    return info


# -- the model -------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchModel:
    """The registered benchmark model and what the servers and clients need of it."""

    tracking_uri: str
    name: str
    version: str
    booster_file: Path
    columns: list[str]
    rows: np.ndarray  # every row of the dataset, float64


def train_and_register(workdir: Path) -> BenchModel:
    """Train the benchmark model, log it with modelferry and register version 1."""
    import warnings

    from lightgbm import LGBMClassifier

    from modelferry.config import DataConfig, SplitConfig
    from modelferry.data import load_dataset
    from modelferry.registry import (
        CLASS_NAMES_TAG,
        ModelRegistry,
        TrackingSettings,
        log_training_run,
    )
    from modelferry.training import (
        TrainedModel,
        classification_metrics,
        predict_positive_proba,
        split_dataset,
    )

    settings = TrackingSettings.resolve(f"sqlite:///{workdir / 'mlflow.db'}")
    dataset = load_dataset(DataConfig())
    split = split_dataset(dataset, SplitConfig(), seed=0)
    params: dict[str, Any] = {
        "n_estimators": 100,
        "num_leaves": 31,
        "min_child_samples": 1,
        "min_data_in_bin": 1,
        "verbosity": -1,
    }
    # All rows train it: the benchmark wants deep trees, not a fair test score.
    estimator = LGBMClassifier(**params, random_state=0)
    estimator.fit(dataset.features, dataset.labels)
    booster = estimator.booster_
    if booster.num_trees() != 100:
        raise RuntimeError(f"the benchmark model has {booster.num_trees()} trees, not 100")
    trained = TrainedModel(
        estimator=estimator,
        model_type="lightgbm",
        params=params,
        feature_names=list(dataset.features.columns),
        flavor="lightgbm",
    )
    proba = predict_positive_proba(estimator, split.x_test)
    metrics = classification_metrics(split.y_test, proba)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logged = log_training_run(settings, "bench", trained, dataset, split, metrics, proba, {})
    tags = {"modelferry.flavor": "lightgbm", CLASS_NAMES_TAG: json.dumps(dataset.class_names)}
    registered = ModelRegistry(settings).register(
        MODEL_NAME, logged.model_uri, logged.run_id, tags, model_id=logged.model_id
    )
    booster_file = workdir / "booster.txt"
    booster.save_model(str(booster_file))
    return BenchModel(
        tracking_uri=settings.tracking_uri,
        name=MODEL_NAME,
        version=registered.version,
        booster_file=booster_file,
        columns=list(dataset.features.columns),
        rows=dataset.features.to_numpy(dtype=np.float64),
    )


def tree_shape(booster_file: Path) -> str:
    """Trees, and leaves per tree (min/mean/max), for the report."""
    import lightgbm

    frame = lightgbm.Booster(model_file=str(booster_file)).trees_to_dataframe()
    leaves = frame[frame["left_child"].isna()].groupby("tree_index").size()
    return (
        f"{len(leaves)} trees, leaves per tree {leaves.min()}/{leaves.mean():.1f}/"
        f"{leaves.max()} (min/mean/max, num_leaves=31)"
    )


def body(model: BenchModel, rows: int, body_format: str) -> bytes:
    """A scoring request of `rows` real rows (the dataset repeated as needed)."""
    picked = model.rows[np.arange(rows) % len(model.rows)].tolist()
    if body_format == "input_data":
        document: dict[str, Any] = {
            "input_data": {"columns": model.columns, "index": list(range(rows)), "data": picked}
        }
    else:
        document = {"dataframe_split": {"columns": model.columns, "data": picked}}
    return orjson.dumps(document)


# -- servers ---------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def wait_for(
    url: str, process: subprocess.Popen[bytes] | None, timeout_s: float, log: Path
) -> None:
    """Poll `url` until it answers 200; fail early if `process` exits."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{url}: the server exited:\n{_tail(log)}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout_s:g} s:\n{_tail(log)}")


def _tail(path: Path, lines: int = 30) -> str:
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def start_process(
    stack: contextlib.ExitStack, command: list[str], log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start `command` in its own session; the stack stops its whole group at exit."""
    with log.open("ab") as out:
        process = subprocess.Popen(
            command,
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    stack.callback(stop_group, process)
    return process


def stop_group(process: subprocess.Popen[bytes], timeout_s: float = 15.0) -> None:
    """SIGTERM the process group we started, then SIGKILL it if it lingers."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)
    # uvicorn workers of `mlflow models serve` may outlive the CLI that started them.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


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
        sys.executable, "-m", "bench.bare_asgi",
        "--model", str(model.booster_file), "--host", HOST, "--port", str(port),
    ]  # fmt: skip
    process = start_process(stack, command, log)
    url = f"http://{HOST}:{port}"
    wait_for(f"{url}/", process, 60.0, log)
    return Server("floor", "(b) bare ASGI floor", f"{url}/score", "input_data", process.pid)


def served_by_deployment(server: Server) -> dict[str, int]:
    """Requests answered per deployment, from the endpoint's Prometheus counters."""
    url = server.url.rsplit("/", 1)[0] + "/metrics"
    text = httpx.get(url, headers=server.headers, timeout=10).text
    served: dict[str, int] = {}
    counter = re.compile(r'^modelferry_requests_total\{.*deployment="([^"]+)".*\} (\d+)$', re.M)
    for found in counter.finditer(text):
        served[found.group(1)] = served.get(found.group(1), 0) + int(found.group(2))
    return served


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


def check_answers(server: Server, model: BenchModel) -> None:
    """One request of each size must succeed and, where probabilities come back, be right."""
    import lightgbm

    booster = lightgbm.Booster(model_file=str(model.booster_file))
    for rows in sorted({s.rows for s in SCENARIOS}):
        headers = {"Content-Type": "application/json", **server.headers}
        response = httpx.post(
            server.url, content=body(model, rows, server.body_format), headers=headers, timeout=60
        )
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


# -- load ------------------------------------------------------------------------------


def lua_script(directory: Path, name: str, payload: bytes, headers: dict[str, str]) -> Path:
    """A wrk script that POSTs `payload` with `headers` (body read from a file)."""
    body_file = directory / f"{name}.json"
    body_file.write_bytes(payload)
    lines = [
        'wrk.method = "POST"',
        f"local f = assert(io.open([[{body_file}]], 'rb'))",
        "wrk.body = f:read('*a')",
        "f:close()",
        'wrk.headers["Content-Type"] = "application/json"',
    ]
    lines += [f'wrk.headers["{k}"] = [[{v}]]' for k, v in headers.items()]
    script = directory / f"{name}.lua"
    script.write_text("\n".join(lines) + "\n")
    return script


_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def parse_wrk(output: str) -> dict[str, float]:
    """Requests/s, p50/p99 (ms), requests, non-2xx and socket errors from wrk's output."""

    def latency(percent: str) -> float:
        found = re.search(rf"^\s*{percent}%\s+([\d.]+)(us|ms|s|m|h)\s*$", output, re.MULTILINE)
        if found is None:
            raise ValueError(f"no {percent}% latency in wrk output:\n{output}")
        return float(found.group(1)) * _UNITS_MS[found.group(2)]

    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    count = re.search(r"(\d+) requests in", output)
    if rate is None or count is None:
        raise ValueError(f"cannot read wrk output:\n{output}")
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    sockets = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    return {
        "requests_per_s": float(rate.group(1)),
        "p50_ms": latency("50"),
        "p99_ms": latency("99"),
        "requests": float(count.group(1)),
        "non_2xx": float(non_2xx.group(1)) if non_2xx else 0.0,
        "socket_errors": float(sum(int(g) for g in sockets.groups())) if sockets else 0.0,
    }


def _session_cpu_s(session: int) -> float:
    """User + system CPU seconds of every live process in a session."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            # After "pid (comm)": state ppid pgrp session ... utime(12) stime(13).
            if int(fields[3]) == session:
                total += int(fields[11]) + int(fields[12])
    return total / tick


def _machine_busy_s() -> float:
    """CPU seconds the whole machine spent busy since boot (all cores)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_wrk(
    server: Server, scenario: Scenario, script: Path, duration_s: int, round_: int
) -> WrkResult:
    """One wrk run, with the server's, wrk's and everyone else's CPU around it."""
    command = [
        "wrk", f"-t{scenario.threads}", f"-c{scenario.connections}", f"-d{duration_s}s",
        "--latency", "--timeout", "10s", "-s", str(script), server.url,
    ]  # fmt: skip
    server_before, busy_before, wrk_before = (
        _session_cpu_s(server.session),
        _machine_busy_s(),
        _children_cpu_s(),
    )
    started = time.monotonic()
    finished = subprocess.run(command, capture_output=True, text=True, check=False)
    wall = time.monotonic() - started
    server_cpu = _session_cpu_s(server.session) - server_before
    busy = _machine_busy_s() - busy_before
    wrk_cpu = _children_cpu_s() - wrk_before
    if finished.returncode != 0:
        raise RuntimeError(f"wrk failed ({finished.returncode}): {finished.stderr}")
    parsed = parse_wrk(finished.stdout)
    cores = len(os.sched_getaffinity(0))
    others = max(0.0, busy - server_cpu - wrk_cpu) / (wall * cores) * 100
    requests = max(parsed["requests"], 1.0)
    return WrkResult(
        server=server.key,
        scenario=scenario.key,
        round=round_,
        requests_per_s=parsed["requests_per_s"],
        p50_ms=parsed["p50_ms"],
        p99_ms=parsed["p99_ms"],
        requests=int(parsed["requests"]),
        non_2xx=int(parsed["non_2xx"]),
        socket_errors=int(parsed["socket_errors"]),
        server_cpu_us_per_request=server_cpu / requests * 1e6,
        server_cpu_percent=server_cpu / wall * 100,
        others_cpu_percent=others,
    )


# -- report ----------------------------------------------------------------------------


def _median(results: Sequence[WrkResult], pick: Callable[[WrkResult], float]) -> float:
    return statistics.median(pick(r) for r in results)


@dataclass(frozen=True)
class Ratio:
    """One target: the measured ratio or value, its per-round range, met or missed."""

    name: str
    value: float
    low: float
    high: float
    target: str
    met: bool


def ratios(results: list[WrkResult]) -> list[Ratio]:
    """The targets, from medians over rounds (with the per-round range)."""

    def runs(server: str, scenario: str) -> list[WrkResult]:
        return sorted(
            (r for r in results if r.server == server and r.scenario == scenario),
            key=lambda r: r.round,
        )

    def ratio(name: str, num: str, den: str, scenario: str, target: float) -> Ratio | None:
        top, bottom = runs(num, scenario), runs(den, scenario)
        if not top or not bottom:
            return None
        per_round = [a.requests_per_s / b.requests_per_s for a, b in zip(top, bottom, strict=True)]
        value = _median(top, lambda r: r.requests_per_s) / _median(
            bottom, lambda r: r.requests_per_s
        )
        return Ratio(
            name, value, min(per_round), max(per_round), f">= {target:g}x", value >= target
        )

    def cpu_ratio(name: str, num: str, den: str, scenario: str) -> Ratio | None:
        # Server CPU per request: how much work each answer costs, whatever else runs.
        top, bottom = runs(num, scenario), runs(den, scenario)
        if not top or not bottom:
            return None
        per_round = [
            b.server_cpu_us_per_request / a.server_cpu_us_per_request
            for a, b in zip(top, bottom, strict=True)
        ]
        value = _median(bottom, lambda r: r.server_cpu_us_per_request) / _median(
            top, lambda r: r.server_cpu_us_per_request
        )
        return Ratio(name, value, min(per_round), max(per_round), "(information)", True)

    p99 = [r.p99_ms for r in runs("modelferry", "one_row_c8")] or [float("nan")]
    found = [
        ratio("(c)/(a) req/s, 1 row, 8 conn", "modelferry", "mlflow", "one_row_c8",
              TARGET_ONE_ROW_VS_MLFLOW),
        Ratio("(c) p99 ms, 1 row, 8 conn", statistics.median(p99), min(p99), max(p99),
              f"<= {TARGET_P99_MS:g} ms", statistics.median(p99) <= TARGET_P99_MS),
        ratio("(c)/(b) req/s, 1 row, 8 conn", "modelferry", "floor", "one_row_c8",
              TARGET_VS_FLOOR),
        ratio("(c)/(a) req/s, 1,000 rows, 4 conn", "modelferry", "mlflow", "rows_1000_c4",
              TARGET_BATCH_VS_MLFLOW),
        cpu_ratio("(b)/(c) server CPU per request, 1 row, 8 conn", "modelferry", "floor",
                  "one_row_c8"),
        cpu_ratio("(a)/(c) server CPU per request, 1 row, 8 conn", "modelferry", "mlflow",
                  "one_row_c8"),
        cpu_ratio("(a)/(c) server CPU per request, 1,000 rows", "modelferry", "mlflow",
                  "rows_1000_c4"),
    ]  # fmt: skip
    return [r for r in found if r is not None]


def report(
    info: dict[str, str], results: list[WrkResult], servers: dict[str, str], extra: list[str]
) -> str:
    """The Markdown report: machine, table of medians, every round, targets."""
    out = ["## Machine", ""]
    out += [f"- {k}: {v}" for k, v in info.items()]
    out += ["", "## Results (median over rounds)", ""]
    out.append(
        "| scenario | server | req/s | p50 ms | p99 ms | server CPU µs/req | others' CPU % |"
    )
    out.append("|---|---|---:|---:|---:|---:|---:|")
    for scenario in SCENARIOS:
        for key, label in servers.items():
            runs = [r for r in results if r.scenario == scenario.key and r.server == key]
            if not runs:
                continue
            errors = sum(r.non_2xx + r.socket_errors for r in runs)
            flag = f" ({errors} errors)" if errors else ""
            out.append(
                f"| {scenario.label} | {label}{flag} "
                f"| {_median(runs, lambda r: r.requests_per_s):,.0f} "
                f"| {_median(runs, lambda r: r.p50_ms):.2f} "
                f"| {_median(runs, lambda r: r.p99_ms):.2f} "
                f"| {_median(runs, lambda r: r.server_cpu_us_per_request):,.0f} "
                f"| {_median(runs, lambda r: r.others_cpu_percent):.0f} |"
            )
    out += ["", "## Targets", "", "| target | measured | per-round range | goal | |"]
    out.append("|---|---:|---|---|---|")
    for target in ratios(results):
        out.append(
            f"| {target.name} | {target.value:.2f} | {target.low:.2f} to {target.high:.2f} "
            f"| {target.target} | {_verdict(target)} |"
        )
    out += ["", "## Every run", ""]
    out.append("| round | scenario | server | req/s | p99 ms | server CPU % | others' CPU % |")
    out.append("|---:|---|---|---:|---:|---:|---:|")
    for r in results:
        out.append(
            f"| {r.round} | {r.scenario} | {r.server} | {r.requests_per_s:,.0f} "
            f"| {r.p99_ms:.2f} | {r.server_cpu_percent:.0f} | {r.others_cpu_percent:.0f} |"
        )
    if extra:
        out += ["", "## Notes", "", *[f"- {line}" for line in extra]]
    return "\n".join(out) + "\n"


def _verdict(target: Ratio) -> str:
    if target.target == "(information)":
        return ""
    return "met" if target.met else "**missed**"


# -- main ------------------------------------------------------------------------------


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _log(message: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


def measure(
    args: argparse.Namespace,
    info: dict[str, str],
    stack: contextlib.ExitStack,
    workdir: Path,
    model: BenchModel,
) -> str:
    """Start the servers, load each with wrk, and return the Markdown report."""
    starters = {"mlflow": start_mlflow, "floor": start_floor, "modelferry": start_endpoint}
    servers: dict[str, Server] = {}
    for key in ("mlflow", "floor", "modelferry"):
        if key in args.servers.split(","):
            _log(f"starting {key}")
            servers[key] = starters[key](stack, model, workdir)
            check_answers(servers[key], model)
    scripts = {
        (s.key, sc.key): lua_script(
            workdir, f"{s.key}-{sc.key}", body(model, sc.rows, s.body_format), s.headers
        )
        for s in servers.values()
        for sc in SCENARIOS
    }
    results: list[WrkResult] = []
    order = list(servers.values())
    for round_ in range(1, args.rounds + 1):
        shift = (round_ - 1) % len(order)
        for scenario in SCENARIOS:
            for server in order[shift:] + order[:shift]:
                script = scripts[(server.key, scenario.key)]
                if args.warmup > 0:
                    run_wrk(server, scenario, script, args.warmup, round_)
                result = run_wrk(server, scenario, script, args.duration, round_)
                results.append(result)
                _log(
                    f"round {round_} {scenario.key:13} {server.key:10} "
                    f"{result.requests_per_s:9,.0f} req/s  p99 {result.p99_ms:7.2f} ms  "
                    f"others {result.others_cpu_percent:3.0f}%"
                )
    command = " ".join(["python", "-m", "bench.serving", *sys.argv[1:]])
    notes = [
        f"command: {command}",
        f"wrk -d{args.duration}s --latency --timeout 10s after a {args.warmup} s warm-up; "
        f"{args.rounds} round(s), server order rotated each round",
        f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
    ]
    if "modelferry" in servers:
        served = served_by_deployment(servers["modelferry"])
        total = sum(served.values()) or 1
        split = ", ".join(f"{n} {c:,} ({c / total:.1%})" for n, c in sorted(served.items()))
        notes.append(f"(c) requests answered per deployment (its /metrics): {split}")
    if args.json is not None:
        args.json.write_text(
            json.dumps({"machine": info, "runs": [asdict(r) for r in results]}, indent=2)
        )
    return report(info, results, {k: s.label for k, s in servers.items()}, notes)


# -- in-process profile ----------------------------------------------------------------


async def _drive(app: Any, payload: bytes, headers: list[tuple[bytes, bytes]], n: int) -> float:
    """CPU µs per request of `n` POST /score calls straight into an ASGI app (no network)."""
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/score",
        "query_string": b"",
        "headers": [(b"host", b"bench"), (b"content-type", b"application/json"), *headers],
    }
    message = {"type": "http.request", "body": payload, "more_body": False}

    async def receive() -> dict[str, Any]:
        return message

    async def send(message: dict[str, Any]) -> None:
        return None

    started = time.thread_time()
    for _ in range(n):
        await app(scope, receive, send)
    return (time.thread_time() - started) / n * 1e6


def fast_single_row(booster: Any) -> Callable[[np.ndarray], float]:
    """A what-if: LightGBM's single-row "FastConfig" C API, set up once per booster.

    `Booster.predict` parses parameters and builds a predictor on every call; for one row
    that is most of its cost. The C API can do that once. This reaches into
    `lightgbm.basic` internals (`_LIB`, `_safe_call`, `_c_str`), which is fine for a
    measurement; a production version should pin lightgbm and fall back to `predict`.
    """
    import ctypes

    from lightgbm.basic import _LIB, _c_str, _safe_call  # type: ignore[attr-defined]

    handle = ctypes.c_void_p()
    _safe_call(
        _LIB.LGBM_BoosterPredictForMatSingleRowFastInit(
            booster._handle,
            ctypes.c_int(0),  # C_API_PREDICT_NORMAL
            ctypes.c_int(0),  # start_iteration
            ctypes.c_int(-1),  # num_iteration: all
            ctypes.c_int(1),  # C_API_DTYPE_FLOAT64
            ctypes.c_int32(booster.num_feature()),
            _c_str("num_threads=1"),
            ctypes.byref(handle),
        )
    )
    out = np.empty(1, dtype=np.float64)
    out_ptr = out.ctypes.data_as(ctypes.POINTER(ctypes.c_double))
    out_len = ctypes.c_int64()

    def predict(row: np.ndarray) -> float:
        _safe_call(
            _LIB.LGBM_BoosterPredictForMatSingleRowFast(
                handle, row.ctypes.data_as(ctypes.c_void_p), ctypes.byref(out_len), out_ptr
            )
        )
        return float(out[0])

    import weakref

    weakref.finalize(predict, _LIB.LGBM_FastConfigFree, handle)
    return predict


def profile(model: BenchModel, repeats: int) -> str:
    """ScoringApp against the floor in one process: CPU per request, stages, cProfile."""
    import asyncio
    import cProfile
    import io
    import pstats
    import timeit

    import lightgbm
    from pydantic import SecretStr

    from bench.bare_asgi import FloorApp
    from modelferry.endpoints.spec import TrafficSplit
    from modelferry.registry import ModelRegistry, TrackingSettings
    from modelferry.serving.app import ScoringApp
    from modelferry.serving.model import load_serving_model
    from modelferry.serving.payload import parse_request
    from modelferry.serving.routing import RoutingTable

    registry = ModelRegistry(TrackingSettings.resolve(model.tracking_uri))
    serving = load_serving_model(registry, registry.get(model.name, model.version))
    key = "k" * 43
    app = ScoringApp("bench", SecretStr(key))
    app.install(
        RoutingTable.build(
            {"blue": serving, "green": serving}, TrafficSplit({"blue": 90, "green": 10})
        )
    )
    booster = lightgbm.Booster(model_file=str(model.booster_file))
    floor = FloorApp(booster)
    auth = [(b"authorization", f"Bearer {key}".encode())]
    apps = {"(b) floor": (floor, []), "(c) ScoringApp": (app, auth)}
    out = ["## In-process profile", ""]
    out.append(
        f"Each app called straight through ASGI, no network; {repeats} interleaved batches, "
        "CPU time of this thread (time.thread_time)."
    )
    out += ["", "| app | rows | CPU µs/request (min) | (median) |", "|---|---:|---:|---:|"]
    for rows, batch in ((1, 1000), (1000, 5)):
        payload = body(model, rows, "input_data")
        samples: dict[str, list[float]] = {name: [] for name in apps}
        for _ in range(repeats):
            for name, (target, headers) in apps.items():
                samples[name].append(asyncio.run(_drive(target, payload, headers, batch)))
        for name, values in samples.items():
            out.append(
                f"| {name} | {rows:,} | {min(values):,.1f} | {statistics.median(values):,.1f} |"
            )

    one = body(model, 1, "input_data")
    matrix = parse_request(one, serving.features, 100_000)
    proba = serving.predict_proba(matrix)
    answer = {"predictions": proba, "classes": serving.class_names, "deployment": "blue"}
    rows_data = orjson.loads(one)["input_data"]["data"]
    fast = fast_single_row(booster)
    if not np.isclose(fast(matrix), booster.predict(matrix)[0], rtol=0, atol=1e-12):
        raise RuntimeError("the single-row C API disagrees with Booster.predict")
    stages: list[tuple[str, Callable[[], object]]] = [
        ("orjson.loads (1 row)", lambda: orjson.loads(one)),
        ("np.array(rows, float64) (floor's parse)", lambda: np.array(rows_data, dtype=np.float64)),
        ("parse_request (1 row)", lambda: parse_request(one, serving.features, 100_000)),
        ("Booster.predict(row)", lambda: booster.predict(matrix)),
        ("Booster.predict(row, num_threads=1)", lambda: booster.predict(matrix, num_threads=1)),
        ("what-if: single-row FastConfig C API", lambda: fast(matrix)),
        ("ServingModel.predict_proba (1 row)", lambda: serving.predict_proba(matrix)),
        ("orjson.dumps(answer)", lambda: orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY)),
        ("Telemetry.record", lambda: app.telemetry.record("blue", 200, 0.001, 1)),
    ]  # fmt: skip
    out += ["", "| stage | µs (min of 7) |", "|---|---:|"]
    for label, stage in stages:
        best = min(timeit.repeat(stage, number=2000, repeat=7)) / 2000 * 1e6
        out.append(f"| {label} | {best:.2f} |")

    profiler = cProfile.Profile()
    asyncio.run(_drive(app, one, auth, 2000))
    profiler.enable()
    asyncio.run(_drive(app, one, auth, 20_000))
    profiler.disable()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(20)
    listing = "\n".join(
        line.replace(str(REPO) + "/", "").replace(sys.prefix + "/", "")
        for line in text.getvalue().splitlines()
        if line.strip()
    )
    out += ["", "cProfile of 20,000 one-row requests (tottime; inflates Python-level costs):"]
    out += ["", "```", listing, "```"]
    return "\n".join(out) + "\n"


# -- main ------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (or the in-process profile) and print the Markdown report."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.serving",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every run (3)")
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run (10)")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of warm-up per run (3)")
    parser.add_argument(
        "--servers",
        default="mlflow,floor,modelferry",
        help="which servers to run, comma-separated (mlflow,floor,modelferry)",
    )
    parser.add_argument("--json", type=Path, help="also write every run as JSON here")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs, store)")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="instead of the servers: ScoringApp vs the floor in-process, stages and cProfile",
    )
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGHUP, _raise_interrupt)

    info = machine_info()
    with contextlib.ExitStack() as stack:
        if args.keep:
            workdir = Path(tempfile.mkdtemp(prefix="mf-bench-"))
        else:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mf-bench-")))
        _log(f"work dir {workdir}")
        _log("training and registering the model")
        model = train_and_register(workdir)
        info["model"] = tree_shape(model.booster_file)
        if args.profile:
            machine = "\n".join(f"- {k}: {v}" for k, v in info.items())
            print(f"## Machine\n\n{machine}\n\n{profile(model, PROFILE_BATCHES)}")
        else:
            print(measure(args, info, stack, workdir, model))
        _log("stopping")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; servers stopped", file=sys.stderr)
        sys.exit(130)
