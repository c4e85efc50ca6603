"""A package's score.py loads and scores a model where MLflow is not installed.

Edge devices install numpy, PyYAML, skops and scikit-learn / LightGBM only. The script,
copied alone as packages hold it, runs in a subprocess where `import mlflow` fails, and must
answer exactly what it answers with MLflow.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelferry.config import DataConfig, ModelSpec, SplitConfig
from modelferry.data import load_dataset
from modelferry.serving import azureml_score
from modelferry.training import split_dataset, train_model

SCRIPT = Path(azureml_score.__file__)

# Runs score.py as a device would, with `import mlflow` failing like a missing package.
DEVICE = """
import importlib.util, json, sys
sys.modules["mlflow"] = None
spec = importlib.util.spec_from_file_location("score", sys.argv[1])
score = importlib.util.module_from_spec(spec)
spec.loader.exec_module(score)
score.init()
answer = score.run(sys.stdin.read())
loaded = sorted(m for m, mod in sys.modules.items() if m.startswith("mlflow") and mod)
print(json.dumps({"answer": answer, "mlflow_modules": loaded}))
"""


@pytest.fixture(scope="module", params=["lightgbm", "logistic_regression", "random_forest"])
def model_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real MLflow model folder of a modelferry-trained model, with class names beside it."""
    import mlflow
    from mlflow.models import infer_signature

    dataset = load_dataset(DataConfig(label_column="target"))
    split = split_dataset(dataset, SplitConfig(), seed=2)
    params = {"n_estimators": 15} if request.param != "logistic_regression" else {}
    trained = train_model(ModelSpec(type=request.param, params=params), split, seed=2)
    sample = split.x_test.head(5)
    folder = tmp_path_factory.mktemp(request.param) / "model"
    flavor = mlflow.lightgbm if trained.flavor == "lightgbm" else mlflow.sklearn
    # skops trusts tree internals only when told to; MLmodel then lists them, and the
    # loader without MLflow must honour that list as MLflow does.
    trusted = ["sklearn.tree._tree.Tree"] if request.param == "random_forest" else None
    flavor.save_model(
        trained.estimator,
        str(folder),
        signature=infer_signature(sample, trained.estimator.predict(sample)),
        input_example=sample,
        skops_trusted_types=trusted,
        pip_requirements=["scikit-learn"],  # spares MLflow inferring them in a subprocess
    )
    (folder / "class_names.json").write_text(json.dumps(list(dataset.class_names)))
    return folder


def request_body(model_dir: Path) -> str:
    example = json.loads((model_dir / "input_example.json").read_text())
    return json.dumps({"input_data": example})


def score_on_device(model_dir: Path, tmp_path: Path) -> dict[str, Any]:
    code = tmp_path / "code"
    code.mkdir()
    shutil.copy(SCRIPT, code / "score.py")  # alone, as in a package
    env = {**os.environ, "AZUREML_MODEL_DIR": str(model_dir.parent)}
    result = subprocess.run(
        [sys.executable, "-c", DEVICE, str(code / "score.py")],
        input=request_body(model_dir),
        capture_output=True,
        text=True,
        env=env,
        cwd=code,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    answer: dict[str, Any] = json.loads(result.stdout.splitlines()[-1])
    return answer


def test_score_py_without_mlflow_answers_as_with_it(model_dir: Path, tmp_path: Path) -> None:
    with_mlflow = azureml_score.load_model(model_dir)
    features = azureml_score.parse_request(request_body(model_dir), with_mlflow.columns)
    expected = with_mlflow.predict_proba(features)

    device = score_on_device(model_dir, tmp_path)

    assert device["mlflow_modules"] == []  # MLflow was never loaded
    predictions = np.asarray(device["answer"]["predictions"])
    assert predictions.shape == (5, 2)
    np.testing.assert_array_equal(predictions, expected)
    assert device["answer"]["classes"] == list(with_mlflow.class_names)
    assert device["answer"]["classes"] == ["malignant", "benign"]


def test_loader_without_mlflow_reads_the_signature(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with_mlflow = azureml_score.load_model(model_dir)
    monkeypatch.setitem(sys.modules, "mlflow", None)  # type: ignore[arg-type]
    monkeypatch.setitem(sys.modules, "mlflow.models", None)  # type: ignore[arg-type]

    without = azureml_score.load_model(model_dir)

    assert without.columns == with_mlflow.columns
    assert len(without.columns) == 30
    assert type(without.estimator) is type(with_mlflow.estimator)
    assert (without.booster is None) == (with_mlflow.booster is None)


def test_loader_without_mlflow_refuses_other_flavors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)  # type: ignore[arg-type]
    monkeypatch.setitem(sys.modules, "mlflow.models", None)  # type: ignore[arg-type]
    (tmp_path / "MLmodel").write_text("flavors:\n  pytorch:\n    model_data: data\n")

    with pytest.raises(ValueError, match="neither a lightgbm nor a sklearn MLflow model"):
        azureml_score.load_model(tmp_path)
