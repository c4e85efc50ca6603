"""Connection limits of the endpoint server process: slow clients are cut off, a cap holds."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from modelferry.endpoints.local.process import free_port

pytestmark = pytest.mark.integration

# The endpoint server's own serving path, with an app whose /admin/ routes read the body.
SERVER = """
import sys
from pydantic import SecretStr
from modelferry.endpoints.local.connections import serve
from modelferry.serving.app import ScoringApp

async def admin(scope, body):
    return 200, {"bytes": len(body)}

serve(ScoringApp("ep", SecretStr("k"), admin=admin), "127.0.0.1", int(sys.argv[1]))
"""


def start(header_s: float, body_s: float, cap: int) -> Iterator[str]:
    port = free_port()
    env = {
        **os.environ,
        "MODELFERRY_HEADER_TIMEOUT_S": str(header_s),
        "MODELFERRY_BODY_TIMEOUT_S": str(body_s),
        "MODELFERRY_MAX_CONNECTIONS": str(cap),
    }
    process = subprocess.Popen([sys.executable, "-c", SERVER, str(port)], env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, "the server exited during start-up"
            try:
                if httpx.get(f"{url}/health/live", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=15)


@pytest.fixture
def short_timeouts() -> Iterator[str]:
    yield from start(header_s=1.0, body_s=1.0, cap=200)


@pytest.fixture
def small_cap() -> Iterator[str]:
    yield from start(header_s=60.0, body_s=60.0, cap=20)


def connect(url: str, first_bytes: bytes = b"") -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=5)
    if first_bytes:
        sock.sendall(first_bytes)
    return sock


def closed_by_server(sock: socket.socket, within_s: float) -> bool:
    """Whether the server closes `sock` within `within_s` seconds (nothing read first)."""
    sock.settimeout(within_s)
    try:
        return sock.recv(1024) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_unfinished_headers_and_bodies_are_cut_off(short_timeouts: str) -> None:
    url = short_timeouts
    partial_head = [connect(url, b"POST /score HTTP/1.1\r\nHost: x\r\nX-Slow: ") for _ in range(50)]
    silent = [connect(url) for _ in range(20)]
    partial_body = [
        connect(url, b"POST /admin/x HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
        for _ in range(20)
    ]
    try:
        # While they hang, a good request is still answered.
        assert httpx.get(f"{url}/health/live", timeout=5).status_code == 200
        slow = [*partial_head, *silent, *partial_body]
        # Each is closed by the server after its 1 s timeout (allow for a busy machine).
        assert all(closed_by_server(sock, within_s=10) for sock in slow)
    finally:
        for sock in [*partial_head, *silent, *partial_body]:
            sock.close()
    complete = httpx.post(f"{url}/admin/x", content=b"x" * 100, timeout=5)
    assert complete.json() == {"bytes": 100}


def test_connections_above_the_cap_are_closed_and_the_server_stays_up(small_cap: str) -> None:
    url = small_cap
    held = [connect(url) for _ in range(20)]
    try:
        time.sleep(0.5)  # let the server accept all twenty
        extra = [connect(url) for _ in range(10)]
        assert all(closed_by_server(sock, within_s=5) for sock in extra)
        for sock in extra:
            sock.close()
        # The connections within the cap are kept (their 60 s header timeout is far off).
        assert not any(closed_by_server(sock, within_s=0.2) for sock in held)
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.5)
    assert httpx.get(f"{url}/health/live", timeout=5).status_code == 200
