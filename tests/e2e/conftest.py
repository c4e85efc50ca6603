"""End-to-end fixtures: production-shaped Prefect (server on PostgreSQL, a process worker,
`prefect deploy --all`) and a real Chromium.

The server runs as a subprocess with its own PREFECT_HOME on a free port, its database a
fresh PostgreSQL database on 127.0.0.1:5432 that the fixture creates and drops. The worker
polls the `modelferry-process` pool from prefect.yaml. The browser is the system Chromium
driven by Playwright (never a downloaded one: CI installs it with `apt-get install chromium`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SERVER_STARTUP_TIMEOUT = 90.0
SERVER_STOP_TIMEOUT = 15.0
#: Settings the server and its clients must not inherit from the developer's shell.
_INHERITED_PREFECT_SETTINGS = (
    "PREFECT_API_URL",
    "PREFECT_API_KEY",
    "PREFECT_UI_API_URL",
    "PREFECT_UI_URL",
    "PREFECT_PROFILE",
    "PREFECT_PROFILES_PATH",
    "PREFECT_SERVER_DATABASE_CONNECTION_URL",
    "PREFECT_API_DATABASE_CONNECTION_URL",
    "PREFECT_SERVER_API_HOST",
    "PREFECT_SERVER_API_PORT",
)


@dataclass(frozen=True)
class PrefectServer:
    """A running `prefect server start`."""

    api_url: str
    ui_url: str
    home: Path
    log_path: Path

    def log(self) -> str:
        """What the server has written so far (stdout and stderr)."""
        return self.log_path.read_text(errors="replace")

    def client_env(self, home: Path) -> dict[str, str]:
        """Environment for a process that runs flows against this server.

        Args:
            home: PREFECT_HOME for that process (kept apart from the developer's ~/.prefect).
        """
        env = _clean_env()
        env.update(
            PREFECT_HOME=str(home),
            PREFECT_API_URL=self.api_url,
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            PYTHONUNBUFFERED="1",
        )
        return env


def _clean_env() -> dict[str, str]:
    env = dict(os.environ)
    for name in _INHERITED_PREFECT_SETTINGS:
        env.pop(name, None)
    return env


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's process group (uvicorn, services), then SIGKILL if it lingers."""
    if process.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, SERVER_STOP_TIMEOUT), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _wait_until_healthy(process: subprocess.Popen[bytes], api_url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last_error = "no answer yet"
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            code = process.poll()
            if code is not None:
                raise RuntimeError(f"`prefect server start` exited with code {code}")
            try:
                response = client.get(f"{api_url}/health")
                if response.status_code == 200:
                    return
                last_error = f"HTTP {response.status_code}: {response.text[:200]}"
            except httpx.HTTPError as exc:
                last_error = repr(exc)
            time.sleep(0.5)
    raise RuntimeError(f"GET {api_url}/health did not answer within {timeout:g} s ({last_error})")


@pytest.fixture(scope="session")
def prefect_database() -> Iterator[str]:
    """A fresh PostgreSQL database for the Prefect server (asyncpg URL)."""
    from tests.conftest import fresh_postgres_database

    with fresh_postgres_database(driver="asyncpg") as url:
        yield url


@pytest.fixture(scope="session")
def prefect_server(
    tmp_path_factory: pytest.TempPathFactory, prefect_database: str
) -> Iterator[PrefectServer]:
    """A real Prefect server with the UI on a free port, backed by PostgreSQL."""
    home = tmp_path_factory.mktemp("prefect-server-home")
    port = _free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    server = PrefectServer(
        api_url=api_url, ui_url=f"http://127.0.0.1:{port}", home=home, log_path=home / "server.log"
    )
    env = _clean_env()
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_API_URL=api_url,
        # Without it the UI calls :4200 and shows "Can't connect to Server API".
        PREFECT_UI_API_URL=api_url,
        PREFECT_SERVER_DATABASE_CONNECTION_URL=prefect_database,
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PYTHONUNBUFFERED="1",
    )
    prefect = Path(sys.executable).with_name("prefect")
    command = [str(prefect), "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    with server.log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, stopped as a whole
        )
    try:
        _wait_until_healthy(process, api_url, SERVER_STARTUP_TIMEOUT)
    except RuntimeError as exc:
        _stop(process)
        pytest.fail(f"{exc}\n--- prefect server log ---\n{server.log()}", pytrace=False)
    except BaseException:  # e.g. Ctrl-C while waiting: never leave the server behind
        _stop(process)
        raise
    try:
        yield server
    finally:
        _stop(process)


# Module scope, not session: Playwright's sync API keeps an event loop running in this
# thread while it is open, and Prefect's sync calls made under a running loop return
# coroutines instead of results, which would break every flow test that runs later.
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """The system Chromium, headless, driven by Playwright's sync API."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: install it with `apt-get install -y chromium` "
            "(never `playwright install`)",
            pytrace=False,
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh browser context and page for one test."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(15_000)
    try:
        yield context.new_page()
    finally:
        context.close()


REPO_ROOT = Path(__file__).resolve().parents[2]
WORK_POOL = "modelferry-process"


@dataclass(frozen=True)
class Worker:
    """A `prefect worker start` polling the project's work pool, with the deployments applied."""

    env: dict[str, str]
    log_path: Path

    def log(self) -> str:
        """What the worker (and the flow runs it started) wrote so far."""
        return self.log_path.read_text(errors="replace")

    def prefect(self, *args: str, timeout: float = 180.0) -> subprocess.CompletedProcess[str]:
        """Run a `prefect` CLI command from the repository root against the server."""
        prefect = Path(sys.executable).with_name("prefect")
        return subprocess.run(
            [str(prefect), "--no-prompt", *args],
            cwd=REPO_ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


@pytest.fixture(scope="session")
def worker(
    prefect_server: PrefectServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Worker]:
    """The work pool created, `prefect deploy --all` applied, and a process worker running."""
    home = tmp_path_factory.mktemp("prefect-worker-home")
    env = prefect_server.client_env(home)
    env["MODELFERRY_PROJECT_DIR"] = str(REPO_ROOT)
    worker = Worker(env=env, log_path=home / "worker.log")
    for command in (
        ("work-pool", "create", WORK_POOL, "--type", "process"),
        ("deploy", "--all"),
    ):
        done = worker.prefect(*command)
        if done.returncode != 0:
            pytest.fail(
                f"`prefect {' '.join(command)}` failed ({done.returncode}):\n"
                f"{done.stdout}\n{done.stderr}",
                pytrace=False,
            )
    prefect = Path(sys.executable).with_name("prefect")
    with worker.log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(prefect), "worker", "start", "--pool", WORK_POOL, "--type", "process"],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield worker
    finally:
        _stop(process)
