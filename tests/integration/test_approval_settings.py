"""`modelferry pending` / `approve` connect as any Prefect client does: Prefect's settings.

A profile alone (no PREFECT_API_URL in the environment) points them at the server; an
auth string reaches a server that demands one, and a wrong one is named, never shown; a
server behind TLS is reached with its CA bundle in PREFECT_API_SSL_CERT_FILE. The server
that demands credentials or TLS is a small proxy in front of the test server.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import os
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from prefect.settings import (
    PREFECT_API_AUTH_STRING,
    PREFECT_API_SSL_CERT_FILE,
    temporary_settings,
)

from modelferry.cli import main
from tests.integration.paused_runs import RESULT_TIMEOUT, PausedFlow, PausedFlows

pytestmark = pytest.mark.integration

REPO = Path(__file__).parents[2]
AUTH_STRING = "reviewer:auth-s3cret-4711"
WRONG_AUTH_STRING = "reviewer:wrong-s3cret-0815"


class GuardedProxy:
    """Forwards to the test server only requests with one Basic credential, over HTTP(S).

    Args:
        upstream: The test server's API root.
        auth_string: The "user:password" a request must send, as Prefect's server does
            with PREFECT_SERVER_API_AUTH_STRING; None lets every request through.
        tls: A server-side TLS context, or None for plain HTTP.
    """

    def __init__(
        self, upstream: str, auth_string: str | None, tls: ssl.SSLContext | None = None
    ) -> None:
        expected = (
            "Basic " + base64.b64encode(auth_string.encode()).decode() if auth_string else None
        )
        origin = httpx.URL(upstream).copy_with(path="/")
        #: The Authorization header of every request that reached the proxy.
        self.authorizations: list[str | None] = []
        seen = self.authorizations

        class Handler(BaseHTTPRequestHandler):
            def _forward(self) -> None:
                authorization = self.headers.get("Authorization")
                seen.append(authorization)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if expected is not None and authorization != expected:
                    self._answer(401, b'{"exception_message": "Unauthorized"}', {})
                    return
                headers = {
                    k: v
                    for k, v in self.headers.items()
                    if k.lower() not in {"host", "authorization", "content-length", "connection"}
                }
                answer = httpx.request(
                    self.command,
                    str(origin.join(self.path)),
                    headers=headers,
                    content=body,
                    timeout=30,
                )
                self._answer(answer.status_code, answer.content, answer.headers)

            def _answer(self, status: int, body: bytes, headers: Mapping[str, str]) -> None:
                self.send_response(status)
                self.send_header("Content-Type", headers.get("content-type", "application/json"))
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

            def log_message(self, format: str, *args: object) -> None:
                pass  # Quiet: pytest shows the test's own output only.

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        scheme = "http"
        if tls is not None:
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
            scheme = "https"
        self.api_url = f"{scheme}://127.0.0.1:{self._server.server_address[1]}/api"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> GuardedProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def start_paused_flow(prefect_harness: str) -> Iterator[Callable[[], PausedFlow]]:
    """Start a flow that pauses for approval in a thread; returns it once it waits."""
    with PausedFlows(prefect_harness) as flows:
        yield flows.start


def _cli(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelferry.cli", *argv],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_a_profile_alone_lists_and_approves_with_its_auth_string(
    prefect_harness: str, start_paused_flow: Callable[[], PausedFlow], tmp_path: Path
) -> None:
    paused = start_paused_flow()
    # A reviewer's shell: no PREFECT_* variable, only the profile in PREFECT_HOME.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env |= {"PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    with GuardedProxy(prefect_harness, AUTH_STRING) as proxy:
        prefect = Path(sys.executable).with_name("prefect")
        for setting in (
            f"PREFECT_API_URL={proxy.api_url}",
            f"PREFECT_API_AUTH_STRING={AUTH_STRING}",
        ):
            done = subprocess.run(
                [str(prefect), "config", "set", setting],
                env=env, capture_output=True, text=True, timeout=120, check=False,
            )  # fmt: skip
            assert done.returncode == 0, done.stdout + done.stderr
        assert "PREFECT_API_URL" in (tmp_path / "prefect" / "profiles.toml").read_text()

        listed = _cli(env, "pending")
        assert listed.returncode == 0, listed.stderr
        assert paused.run.id in listed.stdout

        approved = _cli(env, "approve", paused.run.id, "--reviewer", "carol", "--comment", "ok")
        assert approved.returncode == 0, approved.stderr
        assert "Approved" in approved.stdout

    assert paused.result.result(timeout=RESULT_TIMEOUT) == {
        "decision": "approve",
        "reviewer": "carol",
        "comment": "ok",
    }
    expected = "Basic " + base64.b64encode(AUTH_STRING.encode()).decode()
    assert proxy.authorizations
    assert set(proxy.authorizations) == {expected}


def test_a_wrong_auth_string_is_named_not_shown(
    prefect_harness: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with (
        GuardedProxy(prefect_harness, AUTH_STRING) as proxy,
        temporary_settings({PREFECT_API_AUTH_STRING: WRONG_AUTH_STRING}),
    ):
        code = main(["pending", "--api-url", proxy.api_url])

    out, err = capsys.readouterr()
    assert code == 1
    assert out == ""
    (line,) = err.splitlines()
    assert f"the Prefect API at {proxy.api_url} refused the request (HTTP 401)" in line
    assert "PREFECT_API_AUTH_STRING" in line
    assert "PREFECT_API_KEY" in line
    for secret in (AUTH_STRING, WRONG_AUTH_STRING, "s3cret"):
        assert secret not in out + err


def _self_signed(folder: Path) -> tuple[ssl.SSLContext, Path]:
    """A TLS server context for 127.0.0.1 and the certificate a client must trust."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file = folder / "server.pem"
    key_file = folder / "server.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    return context, cert_file


def test_a_tls_server_is_reached_with_the_ca_bundle_setting(
    prefect_harness: str,
    start_paused_flow: Callable[[], PausedFlow],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    paused = start_paused_flow()
    tls, cert_file = _self_signed(tmp_path)
    with GuardedProxy(prefect_harness, None, tls=tls) as proxy:
        untrusted = main(["pending", "--api-url", proxy.api_url])
        refused = capsys.readouterr().err

        with temporary_settings({PREFECT_API_SSL_CERT_FILE: str(cert_file)}):
            trusted = main(["pending", "--api-url", proxy.api_url])
        listed = capsys.readouterr().out

    assert untrusted == 1
    assert "TLS handshake failed" in refused
    assert "PREFECT_API_SSL_CERT_FILE" in refused
    assert trusted == 0
    assert paused.run.id in listed
