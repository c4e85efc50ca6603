"""Batch scoring: input resolution, chunked scoring, one output per run, failures, SQL."""

from __future__ import annotations

import dataclasses
import os
import traceback
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import SecretStr
from sklearn.datasets import load_breast_cancer
from sqlalchemy import create_engine, text

from modelferry.batch import (
    BatchResult,
    PredictionFile,
    leave_out_predictions,
    prediction_schema,
    probability_schema,
    resolve_inputs,
    run_batch,
    score_file,
    score_probabilities,
)
from modelferry.errors import BatchScoringError
from modelferry.serving.model import BoosterPredictor, ServingModel
from modelferry.serving.schema import FeatureSpec

ROWS = 569  # the breast-cancer dataset
CLASSES = ("malignant", "benign")
PROBA = [f"predictions_{name}" for name in CLASSES]
SECRET = "s3cr3t-value"


@pytest.fixture(scope="module")
def features() -> pd.DataFrame:
    """The 30 breast-cancer feature columns (names with spaces, as in the registry)."""
    return load_breast_cancer(as_frame=True).data


@pytest.fixture(scope="module")
def model(features: pd.DataFrame) -> ServingModel:
    """A small LightGBM model behind the same fast path a registered version gets."""
    target = load_breast_cancer().target
    estimator = lgb.LGBMClassifier(n_estimators=20, num_leaves=7, verbose=-1, random_state=0)
    estimator.fit(features.to_numpy(), target)
    specs = tuple(FeatureSpec(str(name), "double") for name in features.columns)
    return ServingModel("bc", "3", specs, CLASSES, BoosterPredictor(estimator.booster_))


def write(frame: pd.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    return path


def expected(model: ServingModel, frame: pd.DataFrame) -> np.ndarray:
    return model.predict_proba(frame[list(model.feature_names)].to_numpy(dtype=np.float64))


# --- inputs ---------------------------------------------------------------------------


def test_resolve_a_file_a_folder_and_a_glob(tmp_path: Path) -> None:
    for name in ("b.parquet", "a.csv", "c.pq", "sub/d.csv"):
        write(pd.DataFrame({"x": [1]}), tmp_path / name)
    (tmp_path / "notes.txt").write_text("not data", encoding="utf-8")

    assert resolve_inputs(tmp_path / "a.csv") == [tmp_path / "a.csv"]
    # A folder: its scorable files only, sorted, not recursing into sub-folders.
    assert resolve_inputs(str(tmp_path)) == [tmp_path / n for n in ("a.csv", "b.parquet", "c.pq")]
    assert resolve_inputs(f"{tmp_path}/*.csv") == [tmp_path / "a.csv"]
    assert resolve_inputs(f"{tmp_path}/**/*.csv") == [tmp_path / "a.csv", tmp_path / "sub/d.csv"]


@pytest.mark.parametrize("spec", ["empty", "empty/*.parquet", "missing.csv"])
def test_nothing_to_score_names_the_pattern(tmp_path: Path, spec: str) -> None:
    (tmp_path / "empty").mkdir()
    pattern = str(tmp_path / spec)

    with pytest.raises(BatchScoringError) as caught:
        resolve_inputs(pattern)

    assert pattern in str(caught.value)


# --- one file, chunk by chunk ----------------------------------------------------------


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_chunks_match_one_shot_prediction(
    tmp_path: Path, model: ServingModel, features: pd.DataFrame, suffix: str
) -> None:
    # Extra and reordered columns are fine: only the model's columns are read, in its order.
    shuffled = features[list(reversed(features.columns))].assign(patient_id=range(ROWS))
    path = write(shuffled, tmp_path / f"rows{suffix}")

    chunks = list(score_file(path, model, chunk_rows=100))
    bare = list(score_probabilities(path, model, chunk_rows=100))
    assert [chunk.drop_columns(["file"]) for chunk in chunks] == bare
    assert all(chunk.schema == probability_schema(model.class_names) for chunk in bare)

    # Memory bounded: never more than chunk_rows rows held, ceil(569 / 100) chunks.
    assert [chunk.num_rows for chunk in chunks] == [100] * 5 + [69]
    assert all(chunk.schema == prediction_schema(model.class_names) for chunk in chunks)
    scored = pa.Table.from_batches(chunks).to_pandas()
    assert list(scored.columns) == ["file", *PROBA]
    assert set(scored["file"]) == {path.name}
    np.testing.assert_allclose(scored[PROBA].to_numpy(), expected(model, features), rtol=1e-12)


def test_a_csv_of_many_blocks_is_cut_into_exact_chunks(
    tmp_path: Path, model: ServingModel, features: pd.DataFrame
) -> None:
    # About 13 MB of CSV: the parser reads it in many blocks, none a multiple of the chunk.
    many = pd.concat([features] * 40, ignore_index=True)
    path = write(many, tmp_path / "big.csv")

    chunks = list(score_file(path, model, chunk_rows=7_000))

    assert [chunk.num_rows for chunk in chunks] == [7_000] * 3 + [len(many) - 21_000]
    scored = pa.Table.from_batches(chunks).to_pandas()
    np.testing.assert_allclose(scored[PROBA].to_numpy(), expected(model, many), rtol=1e-12)


def test_csv_missing_values_are_read_as_pandas_reads_them(
    tmp_path: Path, model: ServingModel, features: pd.DataFrame
) -> None:
    frame = features.iloc[:6].astype({"mean texture": str})
    frame["mean texture"] = ["", "NA", "None", "nan", "null", "N/A"]
    path = write(frame, tmp_path / "gaps.csv")

    scored = pa.Table.from_batches(list(score_file(path, model))).to_pandas()

    missing = features.iloc[:6].assign(**{"mean texture": np.nan})
    np.testing.assert_allclose(scored[PROBA].to_numpy(), expected(model, missing), rtol=1e-12)


def test_missing_columns_are_named_with_the_file(
    tmp_path: Path, model: ServingModel, features: pd.DataFrame
) -> None:
    path = write(features.drop(columns=["mean radius", "worst area"]), tmp_path / "old.parquet")

    with pytest.raises(BatchScoringError) as caught:
        next(score_file(path, model))

    message = str(caught.value)
    assert message == (
        "old.parquet: missing 2 of the model's 30 feature columns: 'mean radius', 'worst area'"
    )


def test_a_file_lacking_most_columns_names_a_few_and_what_it_has_instead(
    tmp_path: Path, model: ServingModel
) -> None:
    other = pd.DataFrame({"file": ["a.csv"], PROBA[0]: [0.25], PROBA[1]: [0.75]})
    path = write(other, tmp_path / "other.csv")

    with pytest.raises(BatchScoringError) as caught:
        next(score_file(path, model))

    assert str(caught.value) == (
        "other.csv: missing 30 of the model's 30 feature columns: 'mean radius', "
        "'mean texture', 'mean perimeter', 'mean area', 'mean smoothness' and 25 more "
        "(its other columns: 'file', 'predictions_malignant', 'predictions_benign')"
    )


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("broken.parquet", b"PAR1 this is not parquet", "cannot read"),
        ("empty.csv", b"", "cannot read"),
        ("rows.json", b"[]", "cannot score a .json file"),
    ],
)
def test_unreadable_files_are_named(
    tmp_path: Path, model: ServingModel, name: str, content: bytes, reason: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)

    with pytest.raises(BatchScoringError, match=reason) as caught:
        list(score_file(path, model))

    assert name in str(caught.value)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_non_numeric_values_name_the_column(
    tmp_path: Path, model: ServingModel, features: pd.DataFrame, suffix: str
) -> None:
    frame = features.astype({"mean texture": str})
    frame.loc[3, "mean texture"] = "twelve"
    path = write(frame, tmp_path / f"typo{suffix}")

    with pytest.raises(BatchScoringError, match=r"column 'mean texture' is not numeric") as caught:
        list(score_file(path, model))

    assert str(caught.value).startswith(f"typo{suffix}: ")


@pytest.mark.parametrize("chunk_rows", [0, -5])
def test_chunk_rows_must_be_positive(
    tmp_path: Path, model: ServingModel, features: pd.DataFrame, chunk_rows: int
) -> None:
    path = write(features, tmp_path / "rows.parquet")

    with pytest.raises(BatchScoringError, match="chunk_rows must be at least 1"):
        next(score_file(path, model, chunk_rows))
    with pytest.raises(BatchScoringError, match="must be at least 1"):
        run_batch(path, model, tmp_path / "p.parquet", chunk_rows=chunk_rows)


# --- a run over many files --------------------------------------------------------------


@pytest.fixture
def inputs(tmp_path: Path, features: pd.DataFrame) -> Path:
    """A folder: two good files (Parquet, CSV) and one CSV without a needed column."""
    folder = tmp_path / "in"
    write(features.iloc[:300], folder / "a.parquet")
    write(features.iloc[300:], folder / "b.csv")
    write(features.drop(columns=["mean radius"]), folder / "c_bad.csv")
    return folder


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_a_bad_file_is_reported_and_the_others_are_all_written(
    tmp_path: Path, inputs: Path, model: ServingModel, features: pd.DataFrame, suffix: str
) -> None:
    output = tmp_path / "out" / f"predictions{suffix}"

    result = run_batch(inputs, model, output, chunk_rows=64, max_workers=3, max_failed_files=1)

    assert isinstance(result, BatchResult)
    assert (result.rows_scored, result.files_scored) == (ROWS, 2)
    assert list(result.failed_files) == ["c_bad.csv"]
    assert "'mean radius'" in result.failed_files["c_bad.csv"]
    assert result.written
    assert result.summary().count("c_bad.csv") == 1
    assert "| 569 | 2 | 1 |" in result.to_markdown()
    written = pd.read_parquet(output) if suffix == ".parquet" else pd.read_csv(output)
    # Input order, whichever worker finished first.
    assert list(written["file"]) == ["a.parquet"] * 300 + ["b.csv"] * (ROWS - 300)
    np.testing.assert_allclose(written[PROBA].to_numpy(), expected(model, features), rtol=1e-12)
    np.testing.assert_allclose(written[PROBA].sum(axis=1), 1.0)
    # Nothing but the output is left beside it: no partial file, no spool.
    assert [p.name for p in output.parent.iterdir()] == [output.name]
    if suffix == ".parquet":  # file names are read back as plain strings, not a dictionary
        assert pq.read_schema(output) == prediction_schema(CLASSES)


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_a_prediction_file_takes_whole_rows_and_rows_of_one_input_file(
    tmp_path: Path, suffix: str
) -> None:
    schema = prediction_schema(CLASSES)
    whole = pa.RecordBatch.from_pydict(
        {"file": ["x.csv", "y.csv"], PROBA[0]: [0.25, 0.5], PROBA[1]: [0.75, 0.5]}, schema
    )
    only_probabilities = pa.RecordBatch.from_pydict(
        {PROBA[0]: [0.125, 1.0, 0.0], PROBA[1]: [0.875, 0.0, 1.0]}, probability_schema(CLASSES)
    )
    output = tmp_path / f"predictions{suffix}"
    file = PredictionFile(output, schema)
    file.write(whole)
    file.write_rows_of("z.parquet", only_probabilities)
    file.write_rows_of("w.parquet", only_probabilities.slice(0, 1))
    file.commit()

    written = pd.read_parquet(output) if suffix == ".parquet" else pd.read_csv(output)
    assert list(written["file"]) == ["x.csv", "y.csv"] + ["z.parquet"] * 3 + ["w.parquet"]
    assert list(written[PROBA[1]]) == [0.75, 0.5, 0.875, 0.0, 1.0, 0.875]


@pytest.mark.timeout(60)
def test_a_fifo_among_the_inputs_is_a_bad_file_not_a_hang(
    tmp_path: Path, inputs: Path, model: ServingModel
) -> None:
    # Nothing ever writes to the FIFO: opening it to read would wait forever.
    fifo = inputs / "pipe.csv"
    os.mkfifo(fifo)
    files = [inputs / "a.parquet", fifo, inputs / "b.csv"]

    result = run_batch(files, model, tmp_path / "p.csv", max_failed_files=1)

    assert (result.rows_scored, result.files_scored) == (ROWS, 2)
    assert result.failed_files == {
        "pipe.csv": "not a regular file (a folder, FIFO or device); give CSV or Parquet files"
    }


def test_a_file_failing_part_way_adds_none_of_its_rows(
    tmp_path: Path, model: ServingModel, features: pd.DataFrame
) -> None:
    write(features, tmp_path / "in" / "good.parquet")
    late_typo = features.astype({"mean area": object})
    late_typo.loc[500, "mean area"] = "oops"  # in the sixth chunk of 100
    write(late_typo, tmp_path / "in" / "late.csv")

    result = run_batch(
        tmp_path / "in", model, tmp_path / "p.parquet", chunk_rows=100, max_failed_files=1
    )

    assert "column 'mean area' is not numeric" in result.failed_files["late.csv"]
    written = pd.read_parquet(tmp_path / "p.parquet")
    assert set(written["file"]) == {"good.parquet"}
    assert len(written) == ROWS


def test_every_file_failing_writes_nothing(
    tmp_path: Path, model: ServingModel, features: pd.DataFrame
) -> None:
    write(features.drop(columns=["mean radius"]), tmp_path / "in" / "one.csv")
    (tmp_path / "in" / "two.parquet").write_bytes(b"garbage")
    db = tmp_path / "p.db"
    output = tmp_path / "out" / "p.parquet"

    result = run_batch(
        tmp_path / "in", model, output, sql_url=f"sqlite:///{db}", max_failed_files=2
    )

    assert not result.written
    assert (result.rows_scored, result.files_scored) == (0, 0)
    assert list(result.failed_files) == ["one.csv", "two.parquet"]
    assert result.summary().startswith("Nothing was written: no file could be scored (2 failed)")
    assert list((tmp_path / "out").iterdir()) == []
    assert "predictions" not in _tables(f"sqlite:///{db}")


def test_more_failed_files_than_allowed_stop_the_run_and_write_nothing(
    tmp_path: Path, inputs: Path, model: ServingModel
) -> None:
    db = f"sqlite:///{tmp_path / 'p.db'}"
    output = tmp_path / "out" / "p.parquet"

    result = run_batch(inputs, model, output, sql_url=db)  # max_failed_files defaults to 0

    assert not result.written
    assert (result.rows_scored, result.files_scored) == (0, 0)
    assert list(result.failed_files) == ["c_bad.csv"]
    assert result.summary() == (
        "Nothing was written: c_bad.csv: missing 1 of the model's 30 feature columns: "
        "'mean radius'. 1 file(s) failed and max_failed_files is 0: fix or remove them, or "
        "raise max_failed_files to score the other files without them"
    )
    assert "Nothing was written." in result.to_markdown()
    assert list(output.parent.iterdir()) == []
    # The rows of the good files, appended before the bad one failed, are rolled back.
    engine = create_engine(db)
    try:
        assert pd.read_sql_table("predictions", engine).empty
    finally:
        engine.dispose()
    with pytest.raises(BatchScoringError, match="max_failed_files at least 0"):
        run_batch(inputs, model, output, max_failed_files=-1)


# --- earlier predictions among the inputs ----------------------------------------------------


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_the_output_and_earlier_predictions_are_not_scored(
    tmp_path: Path, model: ServingModel, features: pd.DataFrame, suffix: str
) -> None:
    folder = tmp_path / "in"
    write(features, folder / "rows.csv")
    output = folder / f"predictions{suffix}"

    first = run_batch(folder, model, output)
    # An earlier run's output under another name, as the default name gives every run.
    output.rename(folder / f"bc-run-1{suffix}")
    second = run_batch(folder, model, output)
    third = run_batch(folder, model, output)  # its own output is now in the folder too

    assert (first.files_scored, first.left_out) == (1, ())
    assert (second.files_scored, second.failed_files) == (1, {})
    assert second.left_out == (f"bc-run-1{suffix}",)
    assert (third.files_scored, third.failed_files) == (1, {})
    assert third.left_out == (f"bc-run-1{suffix}", f"predictions{suffix}")
    assert third.summary().endswith(
        f"; left out 2 predictions file(s): bc-run-1{suffix}, predictions{suffix}"
    )
    written = pd.read_parquet(output) if suffix == ".parquet" else pd.read_csv(output)
    assert set(written["file"]) == {"rows.csv"}
    assert len(written) == ROWS


def test_only_predictions_files_are_nothing_to_score(
    tmp_path: Path, model: ServingModel, features: pd.DataFrame
) -> None:
    write(features, tmp_path / "rows.csv")
    run_batch(tmp_path / "rows.csv", model, tmp_path / "in" / "old.parquet")

    with pytest.raises(BatchScoringError, match=r"nothing to score: .*old.parquet hold"):
        run_batch(tmp_path / "in", model, tmp_path / "new.parquet")


def test_a_file_whose_columns_cannot_be_read_is_kept_to_be_reported(tmp_path: Path) -> None:
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"not parquet")
    rows = write(pd.DataFrame({"file": ["x"], "predictions_a": [1.0]}), tmp_path / "rows.csv")

    # Without every one of the model's prediction columns a file is an input, not an output.
    kept, left_out = leave_out_predictions([broken, rows], tmp_path / "p.csv", ["a", "b"])

    assert (kept, left_out) == ([broken, rows], [])


# --- an id column passed through -------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_an_id_column_is_passed_through_after_the_file(
    tmp_path: Path, model: ServingModel, features: pd.DataFrame, suffix: str
) -> None:
    ids = [f"{index:04d}" for index in range(ROWS)]
    ids[1] = "=1+1"  # text a spreadsheet would run as a formula
    write(features.iloc[:300].assign(row_id=ids[:300]), tmp_path / "in" / "a.csv")
    numbered = features.iloc[300:].assign(row_id=range(300, ROWS))
    write(numbered, tmp_path / "in" / "b.parquet")
    output = tmp_path / f"predictions{suffix}"
    db = f"sqlite:///{tmp_path / 'p.db'}"

    result = run_batch(
        tmp_path / "in", model, output, chunk_rows=100, sql_url=db, id_column="row_id"
    )

    assert result.written
    if suffix == ".parquet":
        written = pd.read_parquet(output)
        assert pq.read_schema(output) == prediction_schema(CLASSES, "row_id")
    else:
        written = pd.read_csv(output, dtype={"row_id": str})
        ids[1] = "'=1+1"
    assert list(written.columns) == ["file", "row_id", *PROBA]
    # Read as written, zeros kept; Parquet integers as their digits.
    assert list(written["row_id"]) == ids[:300] + [str(n) for n in range(300, ROWS)]
    np.testing.assert_allclose(written[PROBA].to_numpy(), expected(model, features), rtol=1e-12)
    engine = create_engine(db)
    try:
        table = pd.read_sql_table("predictions", engine)
    finally:
        engine.dispose()
    assert list(table.columns[:3]) == ["file", "row_id", PROBA[0]]
    assert list(table["row_id"][:3]) == ["0000", "=1+1", "0002"]


def test_a_file_without_the_id_column_is_a_bad_file(
    tmp_path: Path, model: ServingModel, features: pd.DataFrame
) -> None:
    write(features.assign(id=range(ROWS)), tmp_path / "in" / "a.parquet")
    write(features, tmp_path / "in" / "b.csv")

    result = run_batch(
        tmp_path / "in", model, tmp_path / "p.csv", id_column="id", max_failed_files=1
    )

    assert result.failed_files == {"b.csv": "no id column 'id'"}
    assert list(pd.read_csv(tmp_path / "p.csv")["id"]) == list(range(ROWS))


@pytest.mark.parametrize(
    ("id_column", "reason"),
    [
        ("mean radius", "is a feature of model bc v3"),
        ("file", "name of an output column"),
        ("predictions_benign", "name of an output column"),
        (" ", "id column is empty"),
    ],
)
def test_an_id_column_the_model_or_output_uses_is_refused(
    tmp_path: Path, model: ServingModel, features: pd.DataFrame, id_column: str, reason: str
) -> None:
    path = write(features, tmp_path / "rows.parquet")

    with pytest.raises(BatchScoringError, match=reason):
        run_batch(path, model, tmp_path / "p.parquet", id_column=id_column)
    with pytest.raises(BatchScoringError, match=reason):
        next(score_file(path, model, id_column=id_column))


def test_same_file_names_in_different_folders_stay_apart(
    tmp_path: Path, model: ServingModel, features: pd.DataFrame
) -> None:
    write(features.iloc[:10], tmp_path / "in" / "mon" / "rows.csv")
    write(features.iloc[10:15], tmp_path / "in" / "tue" / "rows.csv")

    result = run_batch(f"{tmp_path}/in/*/rows.csv", model, tmp_path / "p.parquet")

    written = pd.read_parquet(tmp_path / "p.parquet")
    assert written["file"].value_counts().to_dict() == {"mon/rows.csv": 10, "tue/rows.csv": 5}
    assert result.files_scored == 2


# --- SQL ----------------------------------------------------------------------------------


def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            query = text("SELECT name FROM sqlite_master WHERE type = 'table'")
            return {row[0] for row in connection.execute(query)}
    finally:
        engine.dispose()


def test_predictions_are_appended_to_sqlite_with_model_and_run(
    tmp_path: Path, inputs: Path, model: ServingModel
) -> None:
    url = f"sqlite:///{tmp_path / 'scores.db'}"

    first = run_batch(
        inputs, model, tmp_path / "1.csv", sql_url=url, run_id="run-1", max_failed_files=1
    )
    run_batch(
        inputs,
        model,
        tmp_path / "2.csv",
        sql_url=SecretStr(url),
        run_id="run-2",
        max_failed_files=1,
    )

    assert first.sql_table == "predictions"
    engine = create_engine(url)
    try:
        table = pd.read_sql_table("predictions", engine)
    finally:
        engine.dispose()
    assert len(table) == 2 * ROWS
    assert {"file", *PROBA, "model_name", "model_version", "run_id", "scored_at"} <= set(table)
    assert table.groupby("run_id").size().to_dict() == {"run-1": ROWS, "run-2": ROWS}
    assert set(table["model_version"]) == {"3"}
    assert set(table["model_name"]) == {"bc"}
    assert table["scored_at"].notna().all()


def test_a_table_that_refuses_the_rows_keeps_nothing(
    tmp_path: Path, inputs: Path, model: ServingModel
) -> None:
    url = f"sqlite:///{tmp_path / 'scores.db'}"
    engine = create_engine(url)
    try:
        pd.DataFrame({"other": [1]}).to_sql("predictions", engine, index=False)
    finally:
        engine.dispose()

    with pytest.raises(BatchScoringError, match="append to table 'predictions'"):
        run_batch(inputs, model, tmp_path / "out" / "p.parquet", sql_url=url, max_failed_files=1)

    assert list((tmp_path / "out").iterdir()) == []


def test_the_sql_url_password_never_shows(
    tmp_path: Path, inputs: Path, model: ServingModel
) -> None:
    # Nothing listens on port 1: the connection is refused at once.
    url = f"postgresql+psycopg://scorer:{SECRET}@127.0.0.1:1/scores?connect_timeout=2"

    with pytest.raises(BatchScoringError) as caught:
        run_batch(inputs, model, tmp_path / "p.parquet", sql_url=SecretStr(url))

    shown = "".join(traceback.format_exception(caught.value))
    assert SECRET not in shown
    assert "scorer:***@127.0.0.1:1/scores" in str(caught.value)
    assert not (tmp_path / "p.parquet").exists()


class ExplodingPredictor:
    """A predictor that fails on rows whose first feature is over a limit."""

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        if (features[:, 0] > 20).any():
            raise RuntimeError("cannot score radius over 20")
        return np.full((features.shape[0], 2), 0.5)


def test_a_predictor_error_fails_only_its_file(
    tmp_path: Path, model: ServingModel, features: pd.DataFrame
) -> None:
    fragile = ServingModel("bc", "4", model.features, CLASSES, ExplodingPredictor())
    write(features[features["mean radius"] <= 20], tmp_path / "in" / "small.csv")
    write(features, tmp_path / "in" / "all.parquet")

    result = run_batch(
        tmp_path / "in", fragile, tmp_path / "p.csv", chunk_rows=50, max_failed_files=1
    )

    assert result.failed_files == {"all.parquet": "RuntimeError: cannot score radius over 20"}
    assert result.rows_scored == (features["mean radius"] <= 20).sum()


class _ThreadCountingPredictor:
    """Scores columns as `BoosterPredictor` would, and records the threads it was given."""

    def __init__(self, inner: BoosterPredictor) -> None:
        self.inner = inner
        self.threads: set[int | None] = set()

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        return self.inner.predict_proba(features)

    def predict_proba_columns(
        self, columns: list[np.ndarray], *, threads: int | None = None
    ) -> np.ndarray:
        self.threads.add(threads)
        return self.inner.predict_proba(np.column_stack(columns))


@pytest.mark.parametrize(("files", "workers", "threads"), [(4, 2, 2), (1, 2, 4), (3, 4, 1)])
def test_the_cores_are_shared_between_the_files_scored_at_once(
    tmp_path: Path,
    model: ServingModel,
    features: pd.DataFrame,
    monkeypatch: pytest.MonkeyPatch,
    files: int,
    workers: int,
    threads: int,
) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 4)
    assert isinstance(model.predictor, BoosterPredictor)
    counting = _ThreadCountingPredictor(model.predictor)
    counted = dataclasses.replace(model, predictor=counting)
    for index in range(files):
        write(features, tmp_path / "in" / f"{index}.parquet")

    result = run_batch(tmp_path / "in", counted, tmp_path / "out.parquet", max_workers=workers)

    assert result.rows_scored == files * ROWS
    assert counting.threads == {threads}


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_csv_output_neutralises_formula_file_names(tmp_path: Path, suffix: str) -> None:
    schema = prediction_schema(CLASSES)
    hostile = ['=HYPERLINK("http://x")', "+1", "-2", "@SUM(A1)", "\tx", "\rx", "ok.csv"]
    whole = pa.RecordBatch.from_pydict(
        {"file": hostile, PROBA[0]: [-0.5] * 7, PROBA[1]: [1.5] * 7}, schema
    )
    probabilities = pa.RecordBatch.from_pydict(
        {PROBA[0]: [0.25], PROBA[1]: [0.75]}, probability_schema(CLASSES)
    )
    output = tmp_path / f"predictions{suffix}"
    file = PredictionFile(output, schema)
    file.write(whole)
    file.write_rows_of("=cmd|' /C calc'!A0.csv", probabilities)
    file.commit()

    if suffix == ".csv":
        written = pd.read_csv(output, keep_default_na=False)
        expected = [f"'{name}" for name in hostile[:-1]] + ["ok.csv", "'=cmd|' /C calc'!A0.csv"]
        assert list(written["file"]) == expected
        assert list(written[PROBA[0]]) == [-0.5] * 7 + [0.25]
    else:
        written = pd.read_parquet(output)
        assert list(written["file"]) == [*hostile, "=cmd|' /C calc'!A0.csv"]
