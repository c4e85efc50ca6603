"""Schema migrations: databases from before migrations, reruns, and newer databases.

The old databases are written with the DDL earlier releases used (no version table), with
rows in them; opening them, or `modelferry db upgrade`, must keep every row.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime
from importlib.resources import as_file, files
from pathlib import Path

import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory
from pydantic import SecretStr
from sqlalchemy import create_engine, inspect, text

from modelferry.cli import main
from modelferry.delivery.records.schema import metadata
from modelferry.delivery.records.store import DeliveryRecords, upgrade_records_schema
from modelferry.endpoints.local.state import (
    EndpointRecord,
    EndpointStateStore,
    upgrade_endpoint_schema,
)
from modelferry.endpoints.spec import TrafficSplit
from modelferry.errors import DatabaseSchemaError
from modelferry.migrations.heads import HEADS, Store
from tests.endpoint_state_files import FIRST_RELEASE_ENDPOINT_STATE

HEAD = "0001"
T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def records_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database: a SQLite file in tmp_path, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'deliveries.db'}"
    url: str = request.getfixturevalue("postgres_database")
    return url


@pytest.fixture
def old_records_url(records_url: str) -> str:
    """A delivery record database as releases before migrations left it, with a delivery."""
    engine = create_engine(records_url)
    # Those releases ran `create_all` on the tables, and kept no version table.
    metadata.create_all(engine)
    with engine.begin() as db:
        db.execute(
            text(
                "INSERT INTO deliveries (delivery_id, device_id, project_id, package_id, "
                "package_version, state, attempt, created_at, updated_at) VALUES "
                "('d1', 'dev-1', 'prod-bc', 'bc-edge', '1.0.0', 'Success', 1, :at, :at)"
            ),
            {"at": T0},
        )
    engine.dispose()
    return records_url


def _version(url: str, table: str) -> list[str]:
    engine = create_engine(url)
    try:
        with engine.connect() as db:
            return [row[0] for row in db.execute(text(f"SELECT version_num FROM {table}"))]
    finally:
        engine.dispose()


def test_records_from_before_migrations_are_stamped_and_keep_their_rows(
    old_records_url: str,
) -> None:
    store = DeliveryRecords(old_records_url)
    try:
        found = store.get("d1")
        assert found is not None
        assert (found.device_id, found.state) == ("dev-1", "Success")
        assert _version(old_records_url, "modelferry_records_version") == [HEAD]
        again = upgrade_records_schema(store.engine)
        assert (again.before, again.after) == (HEAD, HEAD)
    finally:
        store.close()
    assert _version(old_records_url, "modelferry_records_version") == [HEAD]


def test_a_fresh_records_database_is_created_at_head(records_url: str) -> None:
    engine = create_engine(records_url)
    try:
        upgrade = upgrade_records_schema(engine)
        tables = set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert (upgrade.before, upgrade.after) == (None, HEAD)
    assert {"deliveries", "delivery_transitions", "modelferry_records_version"} <= tables


def test_records_from_a_newer_modelferry_are_refused(old_records_url: str) -> None:
    DeliveryRecords(old_records_url).close()
    engine = create_engine(old_records_url)
    with engine.begin() as db:
        db.execute(text("UPDATE modelferry_records_version SET version_num = '9999'"))
    engine.dispose()
    with pytest.raises(DatabaseSchemaError, match="created by a newer modelferry; upgrade"):
        DeliveryRecords(old_records_url)


def _old_endpoint_state(home: Path) -> Path:
    path = home / "endpoints.db"
    home.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as db:
        db.executescript(FIRST_RELEASE_ENDPOINT_STATE)
    return path


def _endpoint_record(name: str) -> EndpointRecord:
    return EndpointRecord(
        name=name,
        port=8101,
        pid=None,
        scoring_key=SecretStr("key-1"),
        admin_token=SecretStr("token-1"),
        description="",
        tags={},
        traffic=TrafficSplit(),
        tracking_uri="sqlite:///mlflow.db",
        registry_uri=None,
    )


def _columns(path: Path, table: str) -> set[str]:
    with sqlite3.connect(path) as db:
        return {row[1] for row in db.execute(f"PRAGMA table_info({table})")}


def test_endpoint_state_from_before_migrations_gains_the_later_columns(tmp_path: Path) -> None:
    path = _old_endpoint_state(tmp_path)
    store = EndpointStateStore(path)
    assert {"pending_releases", "pid_started_at"} <= _columns(path, "endpoints")
    assert "release" in _columns(path, "traffic_history")
    found = store.get_endpoint("bc")
    assert found is not None
    assert found.scoring_key.get_secret_value() == "key-1"
    assert found.pid_started_at is None
    assert len(store.traffic_history("bc")) == 1
    assert _version(f"sqlite:///{path}", "modelferry_endpoints_version") == [HEAD]
    assert path.stat().st_mode & 0o777 == 0o600
    again = upgrade_endpoint_schema(path)
    assert (again.before, again.after) == (HEAD, HEAD)


def test_endpoint_state_from_a_newer_modelferry_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "endpoints.db"
    EndpointStateStore(path)
    with sqlite3.connect(path) as db:
        db.execute("UPDATE modelferry_endpoints_version SET version_num = '9999'")
    with pytest.raises(DatabaseSchemaError, match="created by a newer modelferry; upgrade"):
        EndpointStateStore(path)


@pytest.mark.parametrize("store", ["records", "endpoints"])
def test_the_recorded_heads_are_the_heads_of_the_alembic_scripts(store: Store) -> None:
    with as_file(files("modelferry.migrations") / store) as location:
        config = Config()
        config.set_main_option("script_location", str(location))
        assert ScriptDirectory.from_config(config).get_current_head() == HEADS[store]


def test_an_endpoint_state_at_head_opens_without_alembic_or_sqlalchemy(tmp_path: Path) -> None:
    path = tmp_path / "endpoints.db"
    EndpointStateStore(path).put_endpoint(_endpoint_record("bc"))
    path.chmod(0o644)
    probe = (
        "import sys, pathlib\n"
        "from modelferry.endpoints.local.state import EndpointStateStore\n"
        "store = EndpointStateStore(pathlib.Path(sys.argv[1]))\n"
        "print([record.name for record in store.list_endpoints()])\n"
        "print(sorted({'alembic', 'sqlalchemy'} & set(sys.modules)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, str(path)], capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    assert done.stdout.splitlines() == ["['bc']", "[]"], done.stderr[-2000:]
    assert path.stat().st_mode & 0o777 == 0o600


def test_an_endpoint_state_behind_head_is_still_migrated(tmp_path: Path) -> None:
    # An empty version table is no revision: the file is adopted and stamped again.
    path = tmp_path / "endpoints.db"
    EndpointStateStore(path)
    with sqlite3.connect(path) as db:
        db.execute("DELETE FROM modelferry_endpoints_version")
    upgrade = upgrade_endpoint_schema(path)
    assert (upgrade.before, upgrade.after, upgrade.unversioned) == (HEAD, HEAD, True)
    assert _version(f"sqlite:///{path}", "modelferry_endpoints_version") == [HEAD]


def test_db_upgrade_migrates_both_stores_and_reports_the_revisions(
    old_records_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "endpoints-home"
    _old_endpoint_state(home)
    argv = ["db", "upgrade", "--records", old_records_url, "--endpoints", str(home)]
    assert main(argv) == 0
    first = capsys.readouterr().out
    assert f"endpoint state at {home / 'endpoints.db'}: (before migrations) -> {HEAD}" in first
    assert f": (before migrations) -> {HEAD} (upgraded)" in first.splitlines()[0]
    assert "pid_started_at" in _columns(home / "endpoints.db", "endpoints")
    assert main(argv) == 0
    second = capsys.readouterr().out.splitlines()
    assert len(second) == 2
    assert all(line.endswith(f"{HEAD} -> {HEAD} (up to date)") for line in second)


def test_db_upgrade_takes_a_sqlite_path_and_creates_the_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "new" / "deliveries.db"
    assert main(["db", "upgrade", "--records", str(path)]) == 0
    assert capsys.readouterr().out == (
        f"delivery records at sqlite:///{path}: (none) -> {HEAD} (upgraded)\n"
    )
    assert _version(f"sqlite:///{path}", "modelferry_records_version") == [HEAD]


def test_db_upgrade_without_options_leaves_missing_default_files_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MODELFERRY_RECORDS_URL", raising=False)
    assert main(["db", "upgrade"]) == 0
    assert "nothing to upgrade" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+nosuchdriver://bob:s3cret-pw@127.0.0.1/db",
        "postgresql://bob:s3cret-pw@db.example:not-a-port/db",
        "not a url://bob:s3cret-pw@db.example/db",
    ],
    ids=["unknown-driver", "bad-port", "unparsable"],
)
def test_db_upgrade_of_a_url_sqlalchemy_cannot_open_is_a_usage_error(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["db", "upgrade", "--records", url]) == 2
    captured = capsys.readouterr()
    (line,) = captured.err.splitlines()
    assert line.startswith("modelferry db upgrade: error: the delivery records URL ")
    assert "bob:***@" in line
    assert "s3cret-pw" not in line
    assert "SQLite file path or a URL such as postgresql+psycopg://" in line
    assert captured.out == ""


@pytest.mark.integration
def test_db_upgrade_never_prints_the_database_password(
    postgres_database: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The test server trusts local connections, so any password gets in.
    url = postgres_database.replace("postgres@", "postgres:s3cret-pw@")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MODELFERRY_RECORDS_URL", url)
    assert main(["db", "upgrade"]) == 0
    out = capsys.readouterr().out
    assert "s3cret-pw" not in out
    assert f"delivery records at {url.replace('s3cret-pw', '***')}: (none) -> {HEAD}" in out


def test_the_cli_loads_no_migration_library_until_db_upgrade_runs(tmp_path: Path) -> None:
    probe = (
        "import sys\n"
        "from modelferry.cli import main\n"
        "main(['db', 'upgrade', '--help'])\n"
        "print(sorted({'alembic', 'sqlalchemy'} & set(sys.modules)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    assert "--records URL_OR_PATH" in done.stdout
    assert done.stdout.splitlines()[-1] == "[]"


def test_processes_opening_a_new_endpoint_state_at_once_all_succeed(tmp_path: Path) -> None:
    # The CLI, a flow and the endpoint servers may open the file at the same moment: each
    # opener is started and loaded first, then all are released together.
    path, go = tmp_path / "endpoints.db", tmp_path / "go"
    probe = (
        "import sys, time, pathlib\n"
        "import modelferry.migrations\n"
        "from modelferry.endpoints.local.state import EndpointStateStore\n"
        "while not pathlib.Path(sys.argv[2]).exists(): time.sleep(0.001)\n"
        "EndpointStateStore(pathlib.Path(sys.argv[1]))"
    )
    openers = [
        subprocess.Popen(
            [sys.executable, "-c", probe, str(path), str(go)], stderr=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    time.sleep(3)
    go.touch()
    failures = [opener.communicate(timeout=120)[1] for opener in openers]
    assert [opener.returncode for opener in openers] == [0] * 4, failures
    assert _version(f"sqlite:///{path}", "modelferry_endpoints_version") == [HEAD]


def test_threads_opening_stores_at_once_all_succeed(tmp_path: Path) -> None:
    # alembic's proxies are process-wide; in a subprocess, so a crash is a failure here.
    probe = (
        "import sys, threading, pathlib\n"
        "from modelferry.delivery.records.store import DeliveryRecords\n"
        "from modelferry.endpoints.local.state import EndpointStateStore\n"
        "root, errors = pathlib.Path(sys.argv[1]), []\n"
        "def open_both(n):\n"
        "    try:\n"
        "        EndpointStateStore(root / f'e{n}.db')\n"
        "        DeliveryRecords(f'sqlite:///{root}/d{n}.db').close()\n"
        "    except Exception as exc:\n"
        "        errors.append(repr(exc))\n"
        "threads = [threading.Thread(target=open_both, args=(n,)) for n in range(6)]\n"
        "for t in threads: t.start()\n"
        "for t in threads: t.join()\n"
        "print(errors)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, str(tmp_path)], capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    assert (done.returncode, done.stdout.strip()) == (0, "[]"), done.stderr[-2000:]
