"""Azurite, the Blob Storage emulator, for tests: installed once, started per test module.

Azurite is installed with npm under `.modelferry/tools` (git-ignored) the first time it
is needed, and found there afterwards. `scripts/test_services.py` (the first step of
`make test` and `.ci/run`) installs it up front; the fixtures do the same when it is
missing. Needs Node.js and npm.

This module imports only the standard library at load time, so the system Python can
run it before the project's virtualenv exists.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from azure.core.credentials import AccessToken

AZURITE_VERSION = "3.35.0"
TOOLS = Path(__file__).resolve().parents[1] / ".modelferry" / "tools"
AZURITE_BLOB = TOOLS / "node_modules" / ".bin" / "azurite-blob"

ACCOUNT = "devstoreaccount1"
# Azurite's well-known development key, published in its documentation: not a secret.
ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
TENANT_ID = "00000000-0000-4000-8000-000000000001"
OBJECT_ID = "00000000-0000-4000-8000-000000000002"


def installed_version() -> str | None:
    """The Azurite version under `.modelferry/tools`, or None."""
    manifest = TOOLS / "node_modules" / "azurite" / "package.json"
    try:
        return str(json.loads(manifest.read_text())["version"])
    except (OSError, ValueError, KeyError):
        return None


def install() -> Path:
    """Install Azurite unless the pinned version is there; the `azurite-blob` command.

    Concurrent callers (parallel test runs) wait for each other on a lock file.
    """
    if installed_version() == AZURITE_VERSION and AZURITE_BLOB.exists():
        return AZURITE_BLOB
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("Azurite needs Node.js and npm; install them (Node 18 or newer)")
    TOOLS.mkdir(parents=True, exist_ok=True)
    with (TOOLS / ".install.lock").open("w") as lock:
        import fcntl

        fcntl.flock(lock, fcntl.LOCK_EX)
        if installed_version() != AZURITE_VERSION or not AZURITE_BLOB.exists():
            subprocess.run(
                [
                    npm,
                    "install",
                    "--prefix",
                    str(TOOLS),
                    "--no-audit",
                    "--no-fund",
                    "--no-save",
                    "--loglevel=error",
                    f"azurite@{AZURITE_VERSION}",
                ],
                check=True,
                timeout=900,
            )
    return AZURITE_BLOB


@dataclass(frozen=True)
class Azurite:
    """A running Azurite Blob service."""

    port: int
    https: bool
    ca_file: Path | None
    """The self-signed certificate to trust (HTTPS only)."""

    @property
    def account_url(self) -> str:
        scheme = "https" if self.https else "http"
        return f"{scheme}://127.0.0.1:{self.port}/{ACCOUNT}"

    @property
    def connection_string(self) -> str:
        scheme = "https" if self.https else "http"
        return (
            f"DefaultEndpointsProtocol={scheme};AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint={self.account_url};"
        )

    def connection_string_with_key(self, account_key: str) -> str:
        """The connection string with another (wrong) account key."""
        return self.connection_string.replace(ACCOUNT_KEY, account_key)


@contextmanager
def running_azurite(workdir: Path, *, oauth: bool = False) -> Iterator[Azurite]:
    """Start Azurite's Blob service on a free port, in memory; stop it afterwards.

    Args:
        workdir: a folder for its log (and, with `oauth`, the certificate).
        oauth: serve HTTPS with a self-signed certificate and accept Azure AD bearer
            tokens (`--oauth basic`), as user delegation keys need.
    """
    command = [
        str(install()),
        "--silent",
        "--inMemoryPersistence",
        "--extentMemoryLimit",
        "256",
        "--loose",
        "--skipApiVersionCheck",
        "--disableTelemetry",
        "--blobHost",
        "127.0.0.1",
    ]
    ca_file = None
    if oauth:
        ca_file, key_file = write_self_signed_certificate(workdir)
        command += ["--oauth", "basic", "--cert", str(ca_file), "--key", str(key_file)]
    for _ in range(3):  # another process may take the free port before Azurite binds it
        port = _free_port()
        log = workdir / f"azurite-{port}.log"
        with log.open("wb") as output:
            process = subprocess.Popen(
                [*command, "--blobPort", str(port)],
                cwd=workdir,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        try:
            if _wait_until_listening(process, port, timeout_s=60):
                yield Azurite(port=port, https=oauth, ca_file=ca_file)
                return
        finally:
            _stop(process)
    raise RuntimeError(f"Azurite did not start; see {log}: {log.read_text()[-2000:]}")


def write_self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost, and its private key, as PEM files."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "azurite-cert.pem", folder / "azurite-key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


class EmulatorTokenCredential:
    """An Azure AD `TokenCredential` whose tokens Azurite's `--oauth basic` accepts.

    Azurite checks a bearer token's shape, lifetime, issuer and audience, not its
    signature; real Azure would refuse these tokens. Records the scopes asked for.
    """

    def __init__(self) -> None:
        self.requests: list[tuple[str, ...]] = []

    def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        from azure.core.credentials import AccessToken

        self.requests.append(scopes)
        now = int(time.time())
        claims_set = {
            "aud": "https://storage.azure.com",
            "iss": f"https://sts.windows.net/{TENANT_ID}/",
            "iat": now - 60,
            "nbf": now - 60,
            "exp": now + 3600,
            "oid": OBJECT_ID,
            "tid": TENANT_ID,
            "sub": OBJECT_ID,
            "ver": "1.0",
        }
        header = {"alg": "RS256", "typ": "JWT"}
        token = ".".join(
            [_b64(json.dumps(header)), _b64(json.dumps(claims_set)), _b64("not-verified")]
        )
        return AccessToken(token, now + 3600)

    def close(self) -> None:
        """Nothing to release."""


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_until_listening(process: subprocess.Popen[bytes], port: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            time.sleep(0.1)
    return False


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


if __name__ == "__main__":
    path = install()
    print(f"azurite {installed_version()} at {os.path.relpath(path)}", file=sys.stderr)
