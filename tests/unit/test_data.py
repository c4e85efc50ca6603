"""The data layer: every source, label encodings, digests, and each way data can be unfit."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import traceback
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import SecretStr
from sqlalchemy import create_engine

from modelferry.config import BundledDataSource, DataConfig, FileDataSource, SqlDataSource
from modelferry.data import Dataset, compute_digest, load_dataset, mask_url
from modelferry.errors import DataError

ROWS = 60


def make_frame(rows: int = ROWS, label: str = "label") -> pd.DataFrame:
    """A small, deterministic table: two numeric features and alternating 0/1 labels."""
    rng = np.random.default_rng(7)
    return pd.DataFrame(
        {
            "x one": rng.normal(size=rows),
            "x_two": rng.integers(0, 100, size=rows),
            label: np.arange(rows) % 2,
        }
    )


def file_config(path: Path, **data: object) -> DataConfig:
    return DataConfig.model_validate(
        {"source": {"kind": "file", "path": path}, "label_column": "target", **data}
    )


def write_and_load(frame: pd.DataFrame, path: Path, **data: object) -> Dataset:
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    return load_dataset(file_config(path, **data))


def sqlite_config(db: Path, query: str, **data: object) -> DataConfig:
    source = SqlDataSource(url=SecretStr(f"sqlite:///{db}"), query=query)
    return DataConfig.model_validate({"source": source, "label_column": "target", **data})


def write_sqlite(frame: pd.DataFrame, db: Path, table: str = "rows") -> None:
    engine = create_engine(f"sqlite:///{db}")
    try:
        frame.to_sql(table, engine, index=False)
    finally:
        engine.dispose()


# --- bundled -------------------------------------------------------------------------------


def test_bundled_breast_cancer_loads_with_its_shape_and_labels() -> None:
    dataset = load_dataset(DataConfig(label_column="target"))

    assert dataset.row_count == 569
    assert len(dataset.feature_names) == 30
    assert "mean radius" in dataset.feature_names  # sklearn's names, spaces kept
    assert dataset.label_column == "target"
    assert dataset.class_names == ("malignant", "benign")
    assert set(dataset.labels.unique()) == {0, 1}
    assert dataset.labels.dtype == np.int64
    # sklearn: 0 = malignant (212 rows), 1 = benign (357 rows).
    assert dataset.labels.value_counts().to_dict() == {1: 357, 0: 212}
    assert dataset.source_uri == "sklearn://breast_cancer"
    assert len(dataset.digest) == 64
    assert int(dataset.digest, 16) >= 0
    assert list(dataset.schema) == [*dataset.feature_names, "target"]
    assert dataset.schema["target"] == "int64"
    assert dataset.schema["mean radius"] == "float64"


def test_bundled_label_column_is_renamed_to_the_configured_name() -> None:
    dataset = load_dataset(DataConfig(label_column="diagnosis"))

    assert dataset.label_column == "diagnosis"
    assert "target" not in dataset.frame.columns
    assert dataset.labels.value_counts().to_dict() == {1: 357, 0: 212}


def test_bundled_label_column_may_not_shadow_a_feature() -> None:
    with pytest.raises(DataError, match=r"'mean radius' is the name of a feature column"):
        load_dataset(DataConfig(label_column="mean radius"))


def test_bundled_digest_is_stable_across_loads_and_processes() -> None:
    first = load_dataset(DataConfig(label_column="target")).digest
    assert load_dataset(DataConfig(label_column="target")).digest == first

    # A fresh interpreter has a different hash seed; the digest must not depend on it.
    code = (
        "from modelferry.config import DataConfig;"
        "from modelferry.data import load_dataset;"
        "print(load_dataset(DataConfig(label_column='target')).digest)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONHASHSEED": "12345"},
        timeout=120,
    )
    assert result.stdout.strip() == first


# --- Dataset -------------------------------------------------------------------------------


def test_dataset_properties_split_features_from_labels() -> None:
    dataset = Dataset.from_frame(make_frame(), "label", ("no", "yes"), "test://frame")

    assert dataset.feature_names == ["x one", "x_two"]
    assert list(dataset.features.columns) == ["x one", "x_two"]
    assert dataset.labels.name == "label"
    assert dataset.row_count == ROWS
    assert dataset.schema == {"x one": "float64", "x_two": "int64", "label": "int64"}
    assert "x_two" not in repr(dataset)  # the whole table would swamp logs


def test_dataset_is_frozen() -> None:
    dataset = Dataset.from_frame(make_frame(), "label", ("no", "yes"), "test://frame")

    with pytest.raises(dataclasses.FrozenInstanceError):
        dataset.digest = "0" * 64  # type: ignore[misc]


def test_digest_depends_on_values_order_names_and_dtypes() -> None:
    frame = make_frame()
    digest = compute_digest(frame)

    assert compute_digest(frame.copy()) == digest
    assert compute_digest(frame.set_axis(range(100, 100 + ROWS))) == digest  # index ignored

    changed = frame.copy()
    changed.at[3, "x_two"] = 1000  # x_two is drawn from 0..99
    assert compute_digest(changed) != digest
    assert compute_digest(frame.iloc[::-1]) != digest
    assert compute_digest(frame.rename(columns={"x_two": "x_2"})) != digest
    assert compute_digest(frame.astype({"x_two": "float64"})) != digest


# --- files ---------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_file_round_trip_keeps_the_data(tmp_path: Path, suffix: str) -> None:
    frame = make_frame()
    dataset = write_and_load(frame, tmp_path / f"data{suffix}", label_column="label")

    pd.testing.assert_frame_equal(dataset.frame, frame, check_exact=False, rtol=1e-12)
    assert dataset.source_uri == (tmp_path / f"data{suffix}").resolve().as_uri()
    assert dataset.source_uri.startswith("file:///")


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_file_digest_same_file_same_digest_changed_value_new_digest(
    tmp_path: Path, suffix: str
) -> None:
    frame = make_frame()
    path = tmp_path / f"data{suffix}"
    first = write_and_load(frame, path, label_column="label")
    again = load_dataset(file_config(path, label_column="label"))
    assert again.digest == first.digest

    changed = frame.copy()
    changed.loc[10, "x one"] = 1234.5
    assert write_and_load(changed, path, label_column="label").digest != first.digest


def test_format_overrides_the_suffix(tmp_path: Path) -> None:
    path = tmp_path / "data.txt"
    make_frame().to_csv(path, index=False)

    config = DataConfig(source=FileDataSource(path=path, format="csv"), label_column="label")
    assert load_dataset(config).row_count == ROWS


def test_missing_file_names_the_resolved_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)

    with pytest.raises(DataError, match="does not exist") as caught:
        load_dataset(file_config(Path("nowhere") / "data.csv"))
    assert str(tmp_path.resolve() / "nowhere" / "data.csv") in str(caught.value)


def test_directory_is_not_a_data_file(tmp_path: Path) -> None:
    folder = tmp_path / "data.csv"
    folder.mkdir()

    with pytest.raises(DataError, match="is not a file"):
        load_dataset(file_config(folder))


def test_corrupt_parquet_is_a_data_error(tmp_path: Path) -> None:
    path = tmp_path / "data.parquet"
    path.write_bytes(b"this is not parquet at all")

    with pytest.raises(DataError, match=r"not readable as PARQUET.*check the file is intact"):
        load_dataset(file_config(path))


def test_malformed_csv_is_a_data_error(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text("a,b,label\n1,2,0\n1,2,3,4,5\n", encoding="utf-8")

    with pytest.raises(DataError, match=r"not readable as CSV"):
        load_dataset(file_config(path))


def test_csv_that_is_not_text_is_a_data_error(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_bytes(b"a,label\n\xff\xfe\xfa,1\n")

    with pytest.raises(DataError, match=r"not readable as CSV"):
        load_dataset(file_config(path))


def test_csv_read_as_parquet_is_a_data_error(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    make_frame().to_csv(path, index=False)

    config = DataConfig(source=FileDataSource(path=path, format="parquet"), label_column="target")
    with pytest.raises(DataError, match=r"data.source.format"):
        load_dataset(config)


def test_empty_file_is_a_data_error(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_bytes(b"")

    with pytest.raises(DataError, match=r"is empty; it needs a header row"):
        load_dataset(file_config(path))


# --- labels --------------------------------------------------------------------------------


def test_string_labels_map_to_their_position_in_class_names(tmp_path: Path) -> None:
    frame = make_frame()
    frame["label"] = np.where(frame["label"] == 1, "spam", "ham")

    dataset = write_and_load(
        frame, tmp_path / "data.csv", label_column="label", class_names=["ham", "spam"]
    )
    assert dataset.labels.tolist() == [0, 1] * (ROWS // 2)
    assert dataset.labels.dtype == np.int64
    assert dataset.class_names == ("ham", "spam")

    # Swapping class_names swaps which class is positive.
    flipped = load_dataset(
        file_config(tmp_path / "data.csv", label_column="label", class_names=["spam", "ham"])
    )
    assert flipped.labels.tolist() == [1, 0] * (ROWS // 2)


@pytest.mark.parametrize(
    "values",
    [
        pytest.param([False, True], id="bool"),
        pytest.param([0.0, 1.0], id="float"),
        pytest.param([0, 1], id="int"),
    ],
)
def test_zero_one_labels_of_any_numeric_type_become_int(
    tmp_path: Path, values: list[object]
) -> None:
    frame = make_frame()
    frame["label"] = pd.Series([values[i % 2] for i in range(ROWS)])

    dataset = write_and_load(frame, tmp_path / "data.parquet", label_column="label")
    assert dataset.labels.tolist() == [0, 1] * (ROWS // 2)
    assert dataset.schema["label"] == "int64"


def test_labels_outside_0_1_name_the_values_and_what_is_allowed(tmp_path: Path) -> None:
    frame = make_frame()
    frame["label"] = frame["label"] + 1  # 1 and 2

    with pytest.raises(DataError) as caught:
        write_and_load(frame, tmp_path / "data.csv", label_column="label")
    message = str(caught.value)
    assert "2 distinct value(s): 1, 2" in message
    assert "'malignant' and 'benign'" in message
    assert "the numbers 0 and 1" in message


def test_unknown_string_labels_name_the_values_and_the_class_names(tmp_path: Path) -> None:
    frame = make_frame()
    frame["label"] = np.where(frame["label"] == 1, "B", "M")

    with pytest.raises(DataError, match=r"'B', 'M'; allowed are the two class names"):
        write_and_load(frame, tmp_path / "data.csv", label_column="label")


def test_missing_labels_say_how_many(tmp_path: Path) -> None:
    frame = make_frame().astype({"label": "float64"})
    frame.loc[[1, 4, 9], "label"] = np.nan

    with pytest.raises(DataError, match=r"3 of 60 rows have no value in label column 'label'"):
        write_and_load(frame, tmp_path / "data.csv", label_column="label")


def test_label_column_absent_lists_the_columns_present(tmp_path: Path) -> None:
    with pytest.raises(DataError) as caught:
        write_and_load(make_frame(), tmp_path / "data.csv", label_column="outcome")
    message = str(caught.value)
    assert "label column 'outcome'" in message
    assert "columns present: 'x one', 'x_two', 'label'" in message


def test_one_class_only_is_a_data_error(tmp_path: Path) -> None:
    frame = make_frame()
    frame["label"] = 1

    with pytest.raises(DataError, match=r"only one class \(1 = 'benign'\) in all 60 rows"):
        write_and_load(frame, tmp_path / "data.csv", label_column="label")


# --- features and size ---------------------------------------------------------------------


def test_fewer_rows_than_min_rows_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"has 20 rows but at least 50 are needed"):
        write_and_load(make_frame(rows=20), tmp_path / "data.csv", label_column="label")

    lowered = write_and_load(
        make_frame(rows=20), tmp_path / "data.csv", label_column="label", min_rows=20
    )
    assert lowered.row_count == 20


def test_entirely_empty_feature_column_is_named(tmp_path: Path) -> None:
    frame = make_frame()
    frame.insert(1, "blank", np.nan)

    with pytest.raises(DataError, match=r"feature column\(s\) 'blank' hold no values"):
        write_and_load(frame, tmp_path / "data.csv", label_column="label")


def test_non_numeric_features_are_named_with_advice(tmp_path: Path) -> None:
    frame = make_frame()
    frame["colour"] = ["red", "blue"] * (ROWS // 2)
    frame["when"] = pd.Timestamp("2024-01-01")

    with pytest.raises(DataError) as caught:
        write_and_load(frame, tmp_path / "data.parquet", label_column="label")
    message = str(caught.value)
    assert "'colour'" in message
    assert "'when'" in message
    assert "'x one'" not in message
    assert "encode them as numbers" in message
    assert "drop them" in message


def test_header_only_file_is_an_empty_result(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text("x,label\n", encoding="utf-8")

    with pytest.raises(DataError, match=r"the data has no rows"):
        load_dataset(file_config(path, label_column="label"))


def test_label_only_data_has_no_features(tmp_path: Path) -> None:
    frame = make_frame()[["label"]]

    with pytest.raises(DataError, match=r"only the label column; add feature columns"):
        write_and_load(frame, tmp_path / "data.csv", label_column="label")


# --- SQL (SQLite file) ---------------------------------------------------------------------


def test_sqlite_query_loads_the_rows(tmp_path: Path) -> None:
    frame = make_frame()
    db = tmp_path / "data.db"
    write_sqlite(frame, db)

    query = "SELECT * FROM rows"
    dataset = load_dataset(sqlite_config(db, query, label_column="label"))
    pd.testing.assert_frame_equal(dataset.frame, frame)
    assert dataset.source_uri == f"sqlite:///{db}"
    assert load_dataset(sqlite_config(db, query, label_column="label")).digest == dataset.digest


def test_sqlite_query_runs_as_written(tmp_path: Path) -> None:
    db = tmp_path / "data.db"
    write_sqlite(make_frame(), db)

    # A literal '%' and ':name' must not be taken for bind parameters.
    query = "SELECT * FROM rows WHERE 'a%' LIKE 'a%' AND '12:30' = '12:30'"
    assert load_dataset(sqlite_config(db, query, label_column="label")).row_count == ROWS


def test_sqlite_bad_query_is_a_data_error(tmp_path: Path) -> None:
    db = tmp_path / "data.db"
    write_sqlite(make_frame(), db)

    with pytest.raises(DataError, match=r"data.source.query failed.*no such table: missing"):
        load_dataset(sqlite_config(db, "SELECT * FROM missing"))


def test_sqlite_query_with_no_rows_is_an_empty_result(tmp_path: Path) -> None:
    db = tmp_path / "data.db"
    write_sqlite(make_frame(), db)

    with pytest.raises(DataError, match=r"the data has no rows"):
        load_dataset(sqlite_config(db, "SELECT * FROM rows WHERE 1 = 0", label_column="label"))


def test_sqlite_duplicate_column_names_are_a_data_error(tmp_path: Path) -> None:
    db = tmp_path / "data.db"
    write_sqlite(make_frame(), db)

    query = 'SELECT "x one", x_two AS "x one", label FROM rows'
    with pytest.raises(DataError, match=r"'x one' occur more than once"):
        load_dataset(sqlite_config(db, query, label_column="label"))


def test_sqlite_all_null_column_is_named_as_empty(tmp_path: Path) -> None:
    db = tmp_path / "data.db"
    write_sqlite(make_frame(), db)

    query = "SELECT *, NULL AS blank FROM rows"
    with pytest.raises(DataError, match=r"'blank' hold no values"):
        load_dataset(sqlite_config(db, query, label_column="label"))


def test_sqlite_unopenable_database_is_a_connection_error(tmp_path: Path) -> None:
    db = tmp_path / "no-such-folder" / "data.db"

    with pytest.raises(DataError, match=r"cannot connect to sqlite:///"):
        load_dataset(sqlite_config(db, "SELECT 1"))


# --- secrets -------------------------------------------------------------------------------

SECRET = "s3cr3t-value"


def assert_secret_hidden(error: DataError) -> None:
    # No chained driver exception either: error reporters may walk __context__.
    assert error.__cause__ is None
    assert error.__context__ is None
    rendered = "".join(traceback.format_exception(error))
    assert SECRET not in rendered
    assert SECRET not in repr(error.args)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        pytest.param(
            f"notadialect://user:{SECRET}@host/db", r"cannot use data.source.url", id="dialect"
        ),
        pytest.param(
            f"postgresql+psycopg://user:{SECRET}@host:notaport/db",
            r"cannot use data.source.url",
            id="bad-port",
        ),
        pytest.param(
            f"postgresql+psycopg://user:{SECRET}@127.0.0.1:1/db",
            r"cannot connect to postgresql\+psycopg://user:\*\*\*@127.0.0.1:1/db",
            id="refused",
        ),
    ],
)
def test_sql_errors_never_show_the_password(url: str, expected: str) -> None:
    config = DataConfig(
        source=SqlDataSource(url=SecretStr(url), query="SELECT 1"), label_column="target"
    )

    with pytest.raises(DataError, match=expected) as caught:
        load_dataset(config)
    assert_secret_hidden(caught.value)
    assert "***" in str(caught.value)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("sqlite:///data.db", "sqlite:///data.db"),
        ("postgresql+psycopg://postgres@h:5432/db", "postgresql+psycopg://postgres@h:5432/db"),
        (f"postgresql+psycopg://u:{SECRET}@h:5432/db", "postgresql+psycopg://u:***@h:5432/db"),
        (f"postgresql://u@h/db?password={SECRET}&x=1", "postgresql://u@h/db?password=***&x=1"),
        (f"postgresql://u:{SECRET}@h:port/db", "postgresql://u:***@h:port/db"),
    ],
)
def test_mask_url_hides_passwords_only(url: str, shown: str) -> None:
    assert mask_url(url) == shown


def test_bundled_source_is_the_default() -> None:
    assert isinstance(DataConfig(label_column="target").source, BundledDataSource)


def test_sqlite_query_runs_read_only(tmp_path: Path) -> None:
    db = tmp_path / "rows.db"
    write_sqlite(pd.DataFrame({"x": range(60), "target": [0, 1] * 30}), db)

    with pytest.raises(DataError, match="single"):
        load_dataset(sqlite_config(db, "DROP TABLE rows; SELECT 1"))
    with pytest.raises(DataError, match=r"read-only|readonly"):
        load_dataset(sqlite_config(db, "WITH d AS (SELECT 1) DELETE FROM rows RETURNING *"))
    assert load_dataset(sqlite_config(db, "SELECT * FROM rows")).row_count == 60


@pytest.mark.parametrize(
    "query",
    [
        "select x, target from rows",
        "  -- the rows\n  SELECT x, target FROM rows;  ",
        "with r as (select * from rows) select * from r",
        "select x, target from rows where 'a;b' <> ';'",
        "/* c */ select x, target from rows /* ; */",
    ],
)
def test_single_queries_are_accepted(tmp_path: Path, query: str) -> None:
    db = tmp_path / "rows.db"
    write_sqlite(pd.DataFrame({"x": range(60), "target": [0, 1] * 30}), db)

    assert load_dataset(sqlite_config(db, query)).row_count == 60


@pytest.mark.parametrize(
    "query",
    ["delete from rows", "update rows set x = 1", "pragma query_only = off", "select 1; select 2"],
)
def test_statements_other_than_one_query_are_refused(tmp_path: Path, query: str) -> None:
    db = tmp_path / "rows.db"
    write_sqlite(pd.DataFrame({"x": range(60), "target": [0, 1] * 30}), db)

    with pytest.raises(DataError, match=r"data\.source\.query"):
        load_dataset(sqlite_config(db, query))
    assert load_dataset(sqlite_config(db, "SELECT * FROM rows")).row_count == 60
