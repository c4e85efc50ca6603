"""Shared fixtures: one Prefect test server per session, a fresh MLflow store per test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

# Before Prefect is imported anywhere: analytics off (else "database is locked" noise).
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Start Prefect's temporary server once per session; yields its API URL."""
    from prefect.settings import PREFECT_API_URL, PREFECT_LOCAL_STORAGE_PATH, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    storage = tmp_path_factory.mktemp("prefect-results")
    with (
        temporary_settings({PREFECT_LOCAL_STORAGE_PATH: storage}),
        prefect_test_harness(server_startup_timeout=60),
    ):
        yield str(PREFECT_API_URL.value())


@pytest.fixture
def mlflow_uri(tmp_path: Path) -> str:
    """A fresh MLflow tracking + registry store (SQLite) for one test."""
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


POSTGRES_SERVER = "postgres@127.0.0.1:5432"


@contextmanager
def fresh_postgres_database(driver: str = "psycopg") -> Iterator[str]:
    """Create a uniquely named PostgreSQL database; yield its SQLAlchemy URL, then drop it."""
    import uuid

    import psycopg
    from psycopg import sql

    name = f"modelferry_test_{uuid.uuid4().hex[:12]}"
    admin_dsn = f"postgresql://{POSTGRES_SERVER}/postgres"
    try:
        admin = psycopg.connect(admin_dsn, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL is not reachable at {POSTGRES_SERVER}: {exc}; start it (see .ci/run)"
        )
    with admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield f"postgresql+{driver}://{POSTGRES_SERVER}/{name}"
    finally:
        with psycopg.connect(admin_dsn, autocommit=True, connect_timeout=5) as admin:
            # FORCE ends any connection the test left open, so the drop cannot hang.
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture
def postgres_database() -> Iterator[str]:
    """A fresh, uniquely named PostgreSQL database; yields its SQLAlchemy URL, then drops it."""
    with fresh_postgres_database() as url:
        yield url


@pytest.fixture
def unactivated_venv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A virtualenv's bin folder, `tmp_path/.venv/bin`, whose Python runs this process.

    Nothing is on PATH and the current folder is `tmp_path`: the printed commands must
    name the scripts in this folder. Returns the bin folder; put scripts in it.
    """
    import shutil
    import sys

    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    monkeypatch.setattr(sys, "executable", str(bin_dir / "python"))
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.chdir(tmp_path)
    return bin_dir
