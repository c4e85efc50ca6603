"""The load generator of the online benchmark: wrk, its scripts, and what a run measured."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from bench.common.machine import children_cpu_s, machine_busy_s, others_cpu_percent, session_cpu_s
from bench.serving.servers import Server


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


def wrk_version() -> str:
    """The version line of wrk, for the report.

    Raises:
        SystemExit: wrk is not on the PATH (the message says how to install it).
    """
    if shutil.which("wrk") is None:
        raise SystemExit(
            "bench.serving needs wrk on the PATH to load the servers: "
            "sudo apt-get install -y wrk (Debian/Ubuntu), then run the benchmark again"
        )
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    lines = (wrk.stdout or wrk.stderr).splitlines()
    return lines[0].split(" [")[0] if lines else "unknown"


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


def run_wrk(
    server: Server, scenario: Scenario, script: Path, duration_s: int, round_: int
) -> WrkResult:
    """One wrk run, with the server's, wrk's and everyone else's CPU around it."""
    command = [
        "wrk", f"-t{scenario.threads}", f"-c{scenario.connections}", f"-d{duration_s}s",
        "--latency", "--timeout", "10s", "-s", str(script), server.url,
    ]  # fmt: skip
    server_before, busy_before, wrk_before = (
        session_cpu_s(server.session),
        machine_busy_s(),
        children_cpu_s(),
    )
    started = time.monotonic()
    finished = subprocess.run(command, capture_output=True, text=True, check=False)
    wall = time.monotonic() - started
    server_cpu = session_cpu_s(server.session) - server_before
    busy = machine_busy_s() - busy_before
    wrk_cpu = children_cpu_s() - wrk_before
    if finished.returncode != 0:
        raise RuntimeError(f"wrk failed ({finished.returncode}): {finished.stderr}")
    parsed = parse_wrk(finished.stdout)
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
        others_cpu_percent=others_cpu_percent(busy, server_cpu + wrk_cpu, wall),
    )
