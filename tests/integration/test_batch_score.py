"""The batch-score flow on a Prefect test server and a real MLflow store; SQL on PostgreSQL."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
from pydantic import SecretStr
from sklearn.datasets import load_breast_cancer
from sqlalchemy import create_engine

from flows.batch_score import batch_score
from flows.inputs import Targets
from flows.train_and_register import train_and_register
from modelferry.batch import run_batch
from modelferry.errors import BatchScoringError
from modelferry.registry import ModelRegistry, TrackingSettings
from modelferry.serving.compiled import COMPILED_MODELS_ENV
from modelferry.serving.model import (
    BoosterPredictor,
    ServingModel,
    load_serving_model,
)
from modelferry.serving.schema import FeatureSpec
from tests.integration.flow_helpers import REPO, api_filter, write_config

pytestmark = pytest.mark.integration

MODEL = "breast-cancer-classifier"
PROBA = ["predictions_malignant", "predictions_benign"]
ROWS = 569


def read_table(url: str, table: str = "predictions") -> pd.DataFrame:
    engine = create_engine(url)
    try:
        return pd.read_sql_table(table, engine)
    finally:
        engine.dispose()


def test_batch_score_flow_scores_a_folder_and_skips_the_bad_file_it_may(
    prefect_harness: str, tmp_path: Path, mlflow_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert train_and_register(
        str(write_config(tmp_path)), targets=Targets(tracking_uri=mlflow_uri)
    ).approved
    data = load_breast_cancer(as_frame=True).data
    folder = tmp_path / "incoming"
    folder.mkdir()
    data.iloc[:300].to_parquet(folder / "part-1.parquet", index=False)
    data.iloc[300:].to_parquet(folder / "part-2.parquet", index=False)
    data.drop(columns=["worst area"]).to_csv(folder / "bad.csv", index=False)
    db = f"sqlite:///{tmp_path / 'scores.db'}"
    output = tmp_path / "out" / "predictions.parquet"
    compiled = tmp_path / "compiled-models"
    monkeypatch.setenv(COMPILED_MODELS_ENV, str(compiled))

    state = batch_score(
        str(folder),
        MODEL,
        output=str(output),
        chunk_rows=128,
        sql_url=db,
        tracking_uri=mlflow_uri,
        max_failed_files=1,
        return_state=True,
    )

    assert state.is_completed()
    assert str(state.message).count("bad.csv") == 1
    result = state.result()
    assert (result.rows_scored, result.files_scored) == (ROWS, 2)
    assert list(result.failed_files) == ["bad.csv"]
    assert "'worst area'" in result.failed_files["bad.csv"]
    assert result.model_version == "1"  # the champion
    written = pd.read_parquet(output)
    assert list(written.columns) == ["file", *PROBA]
    assert len(written) == ROWS
    np.testing.assert_allclose(written[PROBA].sum(axis=1), 1.0)
    # Scored by the compiled trees (cached under the configured folder), which give
    # LightGBM's own probabilities.
    assert len(list(compiled.glob("*.o"))) == 1
    registry = ModelRegistry(TrackingSettings.resolve(mlflow_uri))
    lightgbm_model = load_serving_model(registry, registry.get(MODEL, "1"))
    assert isinstance(lightgbm_model.predictor, BoosterPredictor)
    features = data[list(lightgbm_model.feature_names)].to_numpy()
    np.testing.assert_allclose(
        written[PROBA].to_numpy(), lightgbm_model.predict_proba(features), rtol=0, atol=1e-9
    )
    # The model is good: it should rank most rows the right way round.
    truth = load_breast_cancer().target
    assert ((written["predictions_benign"] > 0.5) == (truth == 1)).mean() > 0.95
    table = read_table(db)
    assert len(table) == ROWS
    assert set(table["run_id"]) == {str(state.state_details.flow_run_id)}
    assert set(table["model_version"]) == {"1"}
    assert set(table["model_name"]) == {MODEL}
    artifacts = api_filter(
        "/artifacts/filter", {"artifacts": {"key": {"any_": [f"batch-{MODEL}"]}}}
    )
    assert any("| 569 | 2 | 1 |" in str(a["data"]) for a in artifacts)

    # By version, default output path under .modelferry/ of the working directory.
    monkeypatch.chdir(tmp_path)
    by_version = batch_score(
        str(folder / "*.parquet"), MODEL, model_version="1", tracking_uri=mlflow_uri
    )
    assert by_version.output_path.parts[:2] == (".modelferry", "predictions")
    assert len(pd.read_parquet(tmp_path / by_version.output_path)) == ROWS

    # Only bad files: the run fails, says why, and writes nothing.
    failed = batch_score(
        str(folder / "*.csv"),
        MODEL,
        output=str(tmp_path / "none.parquet"),
        sql_url=SecretStr(db),
        tracking_uri=mlflow_uri,
        return_state=True,
    )
    assert failed.is_failed()
    assert str(failed.message).startswith("Nothing was written: bad.csv: missing 1 of")
    assert not (tmp_path / "none.parquet").exists()
    assert len(read_table(db)) == ROWS
    # Given as a SecretStr, the URL is stored masked in the flow run's parameters.
    run_id = str(failed.state_details.flow_run_id)
    runs = api_filter("/flow_runs/filter", {"flow_runs": {"id": {"any_": [run_id]}}})
    assert runs[0]["parameters"]["sql_url"] != db
    assert "scores.db" not in str(runs[0]["parameters"])


def run_command_line(args: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    """`python -m flows.batch_score ARGS`: its exit code, output, and final run state."""
    done = subprocess.run(
        [sys.executable, "-m", "flows.batch_score", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    console = done.stdout + done.stderr
    name = re.search(r"Beginning flow run '([^']+)'", console)
    assert name is not None, console
    runs = api_filter("/flow_runs/filter", {"flow_runs": {"name": {"any_": [name[1]]}}})
    return done.returncode, console, runs[0]["state_type"]


def test_the_command_line_says_what_is_wrong_once_and_exits_as_the_run_ends(
    prefect_harness: str, tmp_path: Path, mlflow_uri: str
) -> None:
    assert train_and_register(
        str(write_config(tmp_path)), targets=Targets(tracking_uri=mlflow_uri)
    ).approved
    data = load_breast_cancer(as_frame=True).data.assign(row_id=[f"r{i}" for i in range(ROWS)])
    folder = tmp_path / "incoming"
    folder.mkdir()
    data.iloc[:300].to_parquet(folder / "part-1.parquet", index=False)
    data.iloc[300:].to_csv(folder / "part-2.csv", index=False)
    data.drop(columns=["worst area"]).to_csv(folder / "bad.csv", index=False)
    # What an earlier run wrote into the same folder, under the default name's pattern.
    earlier = pd.DataFrame({"file": ["part-1.parquet"], "row_id": ["r0"], PROBA[0]: [0.5]})
    earlier.assign(**{PROBA[1]: 0.5}).to_parquet(folder / f"{MODEL}-1234.parquet")
    output = folder / "predictions.csv"
    db = f"sqlite:///{tmp_path / 'scores.db'}"
    env = {
        **os.environ,
        "PREFECT_API_URL": prefect_harness,
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        COMPILED_MODELS_ENV: str(tmp_path / "compiled-models"),
        "MODELFERRY_SQL_URL": db,
    }
    args = ["--input", str(folder), "--model-name", MODEL, "--tracking-uri", mlflow_uri]
    args += ["--output", str(output), "--id-column", "row_id"]

    # One bad file is one too many by default: the run fails, writes nothing, exits 1.
    code, console, state = run_command_line(args, env)

    assert (code, state) == (1, "FAILED"), console
    assert console.count("'worst area'") == 1, console
    assert "'mean radius'" not in console
    assert not output.exists()

    # Allowed to skip it: the others are written with their ids, the earlier output and,
    # on the next run, this run's own output are not scored.
    for _ in range(2):
        code, console, state = run_command_line([*args, "--max-failed-files", "1"], env)

        assert (code, state) == (0, "COMPLETED"), console
        assert console.count("'worst area'") == 1, console
        written = pd.read_csv(output)
        assert list(written.columns) == ["file", "row_id", *PROBA]
        assert list(written["row_id"]) == list(data["row_id"])
        assert set(written["file"]) == {"part-1.parquet", "part-2.csv"}
    assert f"left out 2 predictions file(s): {MODEL}-1234.parquet, predictions.csv" in console
    # MODELFERRY_SQL_URL, read from the environment: each completed run appended its rows.
    assert len(read_table(db)) == 2 * ROWS


def test_missing_alias_fails_with_what_to_do(
    prefect_harness: str, tmp_path: Path, mlflow_uri: str
) -> None:
    load_breast_cancer(as_frame=True).data.to_parquet(tmp_path / "rows.parquet")

    state = batch_score(
        str(tmp_path / "rows.parquet"), "no-such-model", tracking_uri=mlflow_uri, return_state=True
    )

    assert state.is_failed()
    assert "has no version aliased 'champion'" in str(state.message)


# --- PostgreSQL ---------------------------------------------------------------------------


@pytest.fixture
def database(postgres_database: str) -> str:
    """A fresh PostgreSQL database for this test (see tests/conftest.py)."""
    return postgres_database


@pytest.fixture(scope="module")
def model() -> ServingModel:
    """A small LightGBM model behind the fast path a registered version gets."""
    data = load_breast_cancer(as_frame=True)
    estimator = lgb.LGBMClassifier(n_estimators=20, num_leaves=7, verbose=-1, random_state=0)
    estimator.fit(data.data.to_numpy(), data.target.to_numpy())
    specs = tuple(FeatureSpec(str(name), "double") for name in data.data.columns)
    classes = ("malignant", "benign")
    return ServingModel("bc", "7", specs, classes, BoosterPredictor(estimator.booster_))


def test_predictions_append_to_postgresql(
    database: str, tmp_path: Path, model: ServingModel
) -> None:
    data = load_breast_cancer(as_frame=True).data.assign(row_id=range(ROWS))
    good = tmp_path / "in" / "a.parquet"
    good.parent.mkdir()
    data.to_parquet(good, index=False)
    data.drop(columns=["mean radius"]).to_parquet(tmp_path / "in" / "bad.parquet", index=False)
    url = SecretStr(database)

    first = run_batch(
        good.parent,
        model,
        tmp_path / "1.csv",
        sql_url=url,
        run_id="r1",
        max_failed_files=1,
        id_column="row_id",
    )
    run_batch(good, model, tmp_path / "2.csv", sql_url=url, sql_table="p2")
    run_batch(good, model, tmp_path / "3.csv", sql_url=url, run_id="r3", id_column="row_id")

    assert list(first.failed_files) == ["bad.parquet"]
    table = read_table(database)
    assert len(table) == 2 * ROWS
    assert table.groupby("run_id").size().to_dict() == {"r1": ROWS, "r3": ROWS}
    assert set(table["file"]) == {"a.parquet"}
    assert list(table.columns[:2]) == ["file", "row_id"]
    assert table["row_id"].value_counts().to_dict() == {str(n): 2 for n in range(ROWS)}
    assert str(table["scored_at"].dtype).startswith("datetime64")
    assert set(table["model_version"]) == {"7"}
    np.testing.assert_allclose(table[PROBA].sum(axis=1), 1.0)
    assert len(read_table(database, "p2")) == ROWS


def test_a_postgresql_table_that_refuses_rows_keeps_none(
    database: str, tmp_path: Path, model: ServingModel
) -> None:
    load_breast_cancer(as_frame=True).data.to_parquet(tmp_path / "a.parquet", index=False)
    engine = create_engine(database)
    try:
        pd.DataFrame({"other": [1]}).to_sql("predictions", engine, index=False)
    finally:
        engine.dispose()

    with pytest.raises(BatchScoringError, match="append to table 'predictions'"):
        run_batch(tmp_path / "a.parquet", model, tmp_path / "out.parquet", sql_url=database)

    assert len(read_table(database)) == 1
    assert not (tmp_path / "out.parquet").exists()
