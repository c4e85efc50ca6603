"""Start the team servers: the Prefect server with its UI, and an MLflow tracking server.

    make server                      # or: python -m deployments.servers

- Prefect: `prefect server start` on PREFECT_SERVER_API_PORT (default 4200); SQLite under
  PREFECT_HOME by default, PostgreSQL when `PREFECT_SERVER_DATABASE_CONNECTION_URL` is set
  (`postgresql+asyncpg://user:password@host:5432/prefect`).
- MLflow: `mlflow server` on MODELFERRY_MLFLOW_PORT (default 5000); the backend store is
  `MODELFERRY_MLFLOW_BACKEND_STORE_URI` (default SQLite under `.modelferry/server/`;
  PostgreSQL: `postgresql+psycopg://user:password@host:5432/mlflow`), artifacts are served
  by the tracking server from `MODELFERRY_MLFLOW_ARTIFACTS` (default
  `.modelferry/server/mlartifacts`).

Listening on every interface (`MODELFERRY_SERVER_HOST=0.0.0.0`), the printed URLs and the
API URL the Prefect UI's browser code calls name the machine (`socket.getfqdn()`, or
`MODELFERRY_SERVER_PUBLIC_HOST`); an explicit `PREFECT_UI_API_URL` is kept.

Both run until Ctrl-C (or SIGTERM), which stops both. When one of them exits, the other is
stopped too and the exit code says which failed. Database URLs hold passwords: they are
never printed.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import httpx

from modelferry.settings import load_settings

HOST_ENV = "MODELFERRY_SERVER_HOST"
# The name printed in URLs and given to the Prefect UI, when the bind address is not it.
PUBLIC_HOST_ENV = "MODELFERRY_SERVER_PUBLIC_HOST"
_WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})
MLFLOW_PORT_ENV = "MODELFERRY_MLFLOW_PORT"
MLFLOW_STORE_ENV = "MODELFERRY_MLFLOW_BACKEND_STORE_URI"
MLFLOW_ARTIFACTS_ENV = "MODELFERRY_MLFLOW_ARTIFACTS"
STATE_DIR = Path(".modelferry/server")


@dataclass(frozen=True)
class Server:
    """One server process to start, and the URL that answers once it is up."""

    name: str
    command: list[str]
    health_url: str
    public_url: str
    env: dict[str, str]


def _bin(name: str) -> str:
    candidate = Path(sys.executable).with_name(name)
    return str(candidate) if candidate.exists() else name


def public_host(host: str) -> str:
    """The name other machines reach a server on: the machine's name for a wildcard bind."""
    named = load_settings().server_public_host
    if host in _WILDCARD_HOSTS:
        return named or socket.getfqdn()
    return named or host


def plan(host: str, prefect_port: int, mlflow_port: int, state_dir: Path) -> list[Server]:
    """The two servers, from the environment's settings.

    Health checks go to loopback when the servers listen on every interface; the URLs
    printed for people, and the API URL the Prefect UI's browser code calls
    (`PREFECT_UI_API_URL`, kept when already set), use the machine's public name.
    """
    state_dir.mkdir(parents=True, exist_ok=True)
    local = "127.0.0.1" if host in _WILDCARD_HOSTS else host
    public = public_host(host)
    settings = load_settings()
    configured_store = settings.mlflow_backend_store_uri
    store = (
        configured_store.get_secret_value()
        if configured_store is not None
        else f"sqlite:///{(state_dir / 'mlflow.db').resolve()}"
    )
    artifacts = Path(settings.mlflow_artifacts or state_dir / "mlartifacts").resolve()
    prefect_env = {
        **os.environ,
        "PREFECT_SERVER_API_HOST": host,
        "PREFECT_SERVER_API_PORT": str(prefect_port),
        "PREFECT_UI_API_URL": os.environ.get("PREFECT_UI_API_URL")
        or f"http://{public}:{prefect_port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    if "PREFECT_HOME" not in os.environ:
        prefect_env["PREFECT_HOME"] = str((state_dir / "prefect").resolve())
    prefect = Server(
        name="Prefect",
        command=[_bin("prefect"), "server", "start", "--host", host, "--port", str(prefect_port)],
        health_url=f"http://{local}:{prefect_port}/api/health",
        public_url=f"http://{public}:{prefect_port}",
        env=prefect_env,
    )
    mlflow = Server(
        name="MLflow",
        command=[
            _bin("mlflow"),
            "server",
            "--host",
            host,
            "--port",
            str(mlflow_port),
            "--backend-store-uri",
            store,
            "--artifacts-destination",
            str(artifacts),
            "--serve-artifacts",
            "--workers",
            "1",
        ],
        health_url=f"http://{local}:{mlflow_port}/health",
        public_url=f"http://{public}:{mlflow_port}",
        env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "GIT_PYTHON_REFRESH": "quiet"},
    )
    return [prefect, mlflow]


def _wait_healthy(
    server: Server, process: subprocess.Popen[bytes], timeout: float, log: Path
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(
                f"{server.name} exited with code {process.returncode} while starting; "
                f"see {log} (a port in use or an unreachable database are the usual causes)"
            )
        try:
            if httpx.get(server.health_url, timeout=2).is_success:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(
        f"{server.name} did not answer {server.health_url} in {timeout:.0f} s; see {log}"
    )


def run(servers: Sequence[Server], state_dir: Path, startup_timeout: float) -> int:
    """Start every server, print where they are, and supervise them until told to stop."""
    processes: list[tuple[Server, subprocess.Popen[bytes]]] = []
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        for server in servers:
            log = state_dir / f"{server.name.lower()}.log"
            with log.open("ab") as out:
                process = subprocess.Popen(
                    server.command, env=server.env, stdout=out, stderr=subprocess.STDOUT
                )
            processes.append((server, process))
            _wait_healthy(server, process, startup_timeout, log)
        prefect, mlflow = servers[0], servers[1]
        print(f"Prefect UI:        {prefect.public_url}")
        print(f"Prefect API:       export PREFECT_API_URL={prefect.public_url}/api")
        print(f"MLflow tracking:   export MLFLOW_TRACKING_URI={mlflow.public_url}")
        print(f"Logs:              {state_dir}/*.log   (Ctrl-C stops both)", flush=True)
        while not stopping:
            for server, process in processes:
                if process.poll() is not None:
                    print(f"{server.name} exited with code {process.returncode}; stopping")
                    return 1
            time.sleep(0.5)
        return 0
    finally:
        for _, process in processes:
            if process.poll() is None:
                process.terminate()
        for _, process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


def main(argv: list[str] | None = None) -> int:
    """Command line: start both servers in the foreground."""
    parser = argparse.ArgumentParser(prog="python -m deployments.servers")
    settings = load_settings()
    parser.add_argument("--host", default=settings.server_host)
    parser.add_argument(
        "--prefect-port", type=int, default=int(os.environ.get("PREFECT_SERVER_API_PORT", 4200))
    )
    parser.add_argument("--mlflow-port", type=int, default=settings.mlflow_port)
    parser.add_argument("--state-dir", type=Path, default=STATE_DIR)
    parser.add_argument("--startup-timeout", type=float, default=120.0)
    args = parser.parse_args(argv)
    servers = plan(args.host, args.prefect_port, args.mlflow_port, args.state_dir)
    return run(servers, args.state_dir, args.startup_timeout)


if __name__ == "__main__":
    sys.exit(main())
