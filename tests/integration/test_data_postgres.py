"""SqlDataSource against a real PostgreSQL server at 127.0.0.1:5432 (user postgres, trust)."""

from __future__ import annotations

import traceback
import uuid

import pytest
from pydantic import SecretStr
from sklearn.datasets import load_breast_cancer
from sqlalchemy import create_engine

from modelferry.config import DataConfig, SqlDataSource
from modelferry.data import load_dataset
from modelferry.errors import DataError

pytestmark = pytest.mark.integration

SERVER = "postgres@127.0.0.1:5432"
SECRET = "s3cr3t-value"


@pytest.fixture
def database(postgres_database: str) -> str:
    """A fresh PostgreSQL database for this test (see tests/conftest.py)."""
    return postgres_database


def sql_config(url: str, query: str) -> DataConfig:
    return DataConfig(source=SqlDataSource(url=SecretStr(url), query=query), label_column="target")


def test_breast_cancer_read_back_through_postgres_matches_the_bundled_source(
    database: str,
) -> None:
    frame = load_breast_cancer(as_frame=True).frame
    engine = create_engine(database)
    try:
        # row_id keeps the order: a table has none, so the query must ORDER BY something.
        frame.to_sql("breast_cancer", engine, index=True, index_label="row_id")
    finally:
        engine.dispose()
    columns = ", ".join(f'"{name}"' for name in frame.columns)  # names contain spaces
    query = f"SELECT {columns} FROM breast_cancer ORDER BY row_id"

    first = load_dataset(sql_config(database, query))
    second = load_dataset(sql_config(database, query))
    bundled = load_dataset(DataConfig(label_column="target"))

    assert first.row_count == bundled.row_count == 569
    assert first.feature_names == bundled.feature_names
    assert first.schema == bundled.schema
    assert first.digest == second.digest == bundled.digest
    assert first.source_uri == database  # no password to mask


def test_query_with_percent_and_colon_runs_as_written(database: str) -> None:
    query = (
        "SELECT g AS x, g % 2 AS target FROM generate_series(1, 60) AS g "
        "WHERE 'a%' LIKE 'a%' AND '12:30'::text = '12:30'"
    )

    dataset = load_dataset(sql_config(database, query))
    assert dataset.row_count == 60
    assert dataset.labels.sum() == 30


def test_bad_query_is_a_data_error(database: str) -> None:
    with pytest.raises(DataError, match=r'data.source.query failed.*relation "missing"'):
        load_dataset(sql_config(database, "SELECT * FROM missing"))


def test_missing_database_is_a_connection_error() -> None:
    url = f"postgresql+psycopg://{SERVER}/modelferry_no_such_db_{uuid.uuid4().hex[:8]}"

    with pytest.raises(DataError, match=r"cannot connect to .*does not exist"):
        load_dataset(sql_config(url, "SELECT 1"))


def test_unreachable_server_error_hides_the_password() -> None:
    url = f"postgresql+psycopg://postgres:{SECRET}@127.0.0.1:1/postgres"

    with pytest.raises(DataError, match=r"cannot connect to") as caught:
        load_dataset(sql_config(url, "SELECT 1"))
    message = str(caught.value)
    assert SECRET not in message
    assert "postgres:***@127.0.0.1:1/postgres" in message
    assert SECRET not in "".join(traceback.format_exception(caught.value))
    assert caught.value.__context__ is None


def _table_exists(database: str, table: str) -> bool:
    engine = create_engine(database)
    try:
        with engine.connect() as connection:
            found = connection.exec_driver_sql(f"SELECT to_regclass('{table}') IS NOT NULL")
            return bool(found.scalar())
    finally:
        engine.dispose()


def _make_table(database: str) -> None:
    engine = create_engine(database)
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql("CREATE TABLE keep (x int, target int)")
            connection.exec_driver_sql(
                "INSERT INTO keep SELECT g, mod(g, 2) FROM generate_series(1, 60) AS g"
            )
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    "query",
    ["drop table keep; select 1 as x, 0 as target", "select * from keep; drop table keep"],
)
def test_a_query_of_several_statements_is_refused_and_runs_nothing(
    database: str, query: str
) -> None:
    _make_table(database)

    with pytest.raises(DataError, match=r"data\.source\.query .*single"):
        load_dataset(sql_config(database, query))
    assert _table_exists(database, "keep")


def test_a_query_that_writes_is_refused_by_the_database(database: str) -> None:
    _make_table(database)
    query = "WITH gone AS (DELETE FROM keep RETURNING *) SELECT * FROM gone"

    with pytest.raises(DataError, match=r"read-only"):
        load_dataset(sql_config(database, query))
    assert load_dataset(sql_config(database, "SELECT * FROM keep")).row_count == 60
