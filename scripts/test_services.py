#!/usr/bin/env python3
"""Make sure the machine has what the test suite talks to; install or start what is missing.

`make test` and `.ci/run` run this before anything else. Each requirement is checked
first (all together well under a second when everything is there). Then:

- as root, missing Debian packages are installed with apt (one `apt-get update`, one
  `apt-get install`) and a PostgreSQL cluster that is installed but down is started;
- without root, nothing is installed: one line per missing thing, naming it and the
  command that installs it, and the exit status is 1, before any test runs.

Azurite (npm, under `.modelferry/tools`) needs no root and is installed by anyone once the
rest is there. Run with `--check` to only report. Only the standard library is used, so the
system Python runs this before the project's virtualenv exists.

`MODELFERRY_TEST_SERVICES_MISSING` (names separated by commas, e.g. `chromium,nats-server`)
makes the script treat those requirements as missing; it exists to test this script.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
PRETEND_MISSING = "MODELFERRY_TEST_SERVICES_MISSING"
POSTGRES_ADDRESS = ("127.0.0.1", 5432)
POSTGRES_CONFIG = Path("/etc/postgresql")
# Debian installs servers under sbin, which is not on every user's PATH.
SYSTEM_SBIN = ("/usr/sbin", "/sbin")


@dataclass(frozen=True)
class Requirement:
    """One thing the tests need, how to tell it is there and how to get it."""

    name: str
    why: str
    present: Callable[[], bool]
    packages: tuple[str, ...] = ()
    """Debian packages that provide it (installed as root)."""


def _binary(name: str) -> Callable[[], bool]:
    def present() -> bool:
        return shutil.which(name) is not None or any(
            os.access(Path(folder) / name, os.X_OK) for folder in SYSTEM_SBIN
        )

    return present


def _file(path: str) -> Callable[[], bool]:
    return lambda: os.access(path, os.X_OK)


def postgres_state() -> str:
    """`ok`, `down` (nothing answers) or why the server refuses the tests' login.

    Speaks the start of PostgreSQL's wire protocol: the tests log in as `postgres` without
    a password (trust auth) on 127.0.0.1:5432.
    """
    try:
        connection = socket.create_connection(POSTGRES_ADDRESS, timeout=2)
    except OSError:
        return "down"
    with connection:
        body = b"user\0postgres\0database\0postgres\0\0"
        connection.sendall(struct.pack("!ii", 8 + len(body), 196608) + body)
        try:
            header = connection.recv(5)
            if len(header) < 5:
                return "closed the connection at login"
            kind, _length = header[:1], struct.unpack("!i", header[1:])[0]
            if kind == b"E":
                return "refused the login of user postgres"
            if kind != b"R":
                return f"answered {kind!r}, not PostgreSQL's login reply"
            (code,) = struct.unpack("!i", connection.recv(4))
        except (OSError, struct.error):
            return "broke off at login"
        connection.sendall(b"X\0\0\0\x04")
    if code != 0:
        return "asks user postgres for a password; the tests need trust auth for 127.0.0.1"
    return "ok"


def _load_azurite() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_azurite", ROOT / "tests" / "azurite.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


AZURITE = _load_azurite()


def _azurite_present() -> bool:
    return bool(
        AZURITE.installed_version() == AZURITE.AZURITE_VERSION and AZURITE.AZURITE_BLOB.exists()
    )


REQUIREMENTS = (
    Requirement(
        "chromium",
        "/usr/bin/chromium, the browser of the e2e UI tests",
        _file("/usr/bin/chromium"),
        ("chromium",),
    ),
    Requirement(
        "chromedriver",
        "/usr/bin/chromedriver, Chromium's driver",
        _file("/usr/bin/chromedriver"),
        ("chromium-driver",),
    ),
    Requirement(
        "mosquitto",
        "the MQTT broker the delivery tests start",
        _binary("mosquitto"),
        ("mosquitto",),
    ),
    Requirement(
        "nats-server",
        "the NATS server the streaming tests start",
        _binary("nats-server"),
        ("nats-server",),
    ),
    Requirement("node", "Node.js, which runs Azurite", _binary("node"), ("nodejs",)),
    Requirement("npm", "npm, which installs Azurite", _binary("npm"), ("npm",)),
    Requirement(
        "postgresql",
        "the PostgreSQL server binaries (pg_ctlcluster)",
        lambda: _binary("pg_ctlcluster")() and _clusters() != [],
        ("postgresql",),
    ),
)


def _clusters() -> list[str]:
    """Installed PostgreSQL versions with a cluster configured, newest last."""
    try:
        versions = [p.name for p in POSTGRES_CONFIG.iterdir() if (p / "main").is_dir()]
    except OSError:
        return []
    return sorted(versions, key=lambda v: [int(x) if x.isdigit() else 0 for x in v.split(".")])


def _pretended_missing() -> set[str]:
    return {name.strip() for name in os.environ.get(PRETEND_MISSING, "").split(",") if name}


def missing_requirements() -> list[Requirement]:
    """The requirements that are not met, in the order they are listed."""
    pretend = _pretended_missing()
    return [r for r in REQUIREMENTS if r.name in pretend or not r.present()]


def _say(text: str) -> None:
    print(f"test-services: {text}", file=sys.stderr, flush=True)


def _apt_install(packages: list[str]) -> None:
    _say(f"installing {' '.join(packages)} with apt")
    environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=environment)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", *packages],
        check=True,
        env=environment,
        stdout=subprocess.DEVNULL,
    )


def _start_postgres() -> None:
    versions = _clusters()
    if not versions:
        return
    _say(f"starting PostgreSQL {versions[-1]}")
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main", "start"],
        check=False,
    )
    deadline = time.monotonic() + 30
    while postgres_state() == "down" and time.monotonic() < deadline:
        time.sleep(0.5)


def problems(missing: list[Requirement], *, postgres: str, azurite: bool) -> list[str]:
    """One line per thing still missing, naming it and the command that gets it."""
    lines = [
        f"missing {r.name} ({r.why}): as root, apt-get install -y {' '.join(r.packages)}"
        for r in missing
    ]
    installed = all(r.name != "postgresql" for r in missing)
    if postgres == "down" and installed:
        version = (_clusters() or ["VERSION"])[-1]
        lines.append(
            "missing PostgreSQL on 127.0.0.1:5432 (nothing answers): as root, "
            f"pg_ctlcluster --skip-systemctl-redirect {version} main start"
        )
    elif postgres not in ("ok", "down"):
        lines.append(
            f"PostgreSQL on 127.0.0.1:5432 {postgres}: as root, allow "
            "`host all postgres 127.0.0.1/32 trust` in pg_hba.conf and reload it"
        )
    if not azurite:
        lines.append(
            f"missing Azurite {AZURITE.AZURITE_VERSION} (the Blob Storage emulator, under "
            ".modelferry/tools): python3 tests/azurite.py"
        )
    return lines


def _azurite_ready() -> bool:
    return "azurite" not in _pretended_missing() and _azurite_present()


def _attempt(step: Callable[..., object], *args: object) -> None:
    """Run one setup step; a failure is one `failed:` line, not a traceback."""
    try:
        step(*args)
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        _say(f"failed: {exc}")


def main(argv: list[str] | None = None) -> int:
    """Check, then (unless `--check`) install and start what is missing; 0 when all is there."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report, change nothing")
    args = parser.parse_args(argv)

    missing, postgres, azurite = missing_requirements(), postgres_state(), _azurite_ready()
    if not missing and postgres == "ok" and azurite:
        return 0
    needs_root = bool(missing) or postgres != "ok"
    if args.check or (needs_root and os.geteuid() != 0):
        for line in problems(missing, postgres=postgres, azurite=azurite):
            print(line, file=sys.stderr)
        return 1
    packages = sorted({package for r in missing for package in r.packages})
    # Each step on its own: a failed apt-get still lets an installed PostgreSQL start and
    # Azurite install. What is still missing is listed below; `failed:` says why.
    if packages:
        _attempt(_apt_install, packages)
    if postgres_state() == "down":
        _attempt(_start_postgres)
    # Azurite installs under the checkout with npm: no root needed.
    if not _azurite_present() and shutil.which("npm"):
        _say(f"installing Azurite {AZURITE.AZURITE_VERSION} with npm")
        _attempt(AZURITE.install)
    remaining = problems(
        missing_requirements(), postgres=postgres_state(), azurite=_azurite_ready()
    )
    for line in remaining:
        print(line, file=sys.stderr)
    return 1 if remaining else 0


if __name__ == "__main__":
    sys.exit(main())
