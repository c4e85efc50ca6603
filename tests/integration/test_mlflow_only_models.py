"""Versions registered by plain MLflow calls, without modelferry tags, served locally."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import mlflow
import numpy as np
import pytest

from modelferry.config import DataConfig
from modelferry.data import load_dataset
from modelferry.endpoints.local import LocalEndpointBackend
from modelferry.endpoints.spec import DeploymentSpec, EndpointSpec, ModelRef, TrafficSplit
from modelferry.registry import TrackingSettings
from tests.model_fixtures import score_payload

pytestmark = pytest.mark.integration


# Custom models as code files (MLflow's models-from-code): the server process loads them
# without importing this test module.
POSITIVE_SHARE = """
import numpy as np
import mlflow


class PositiveShare(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        values = np.asarray(model_input, dtype=np.float64)
        return 1.0 / (1.0 + np.exp(-(values[:, 0] - 14.0)))


mlflow.models.set_model(PositiveShare())
"""

NO_PROBABILITIES = """
import numpy as np
import mlflow


class NoProbabilities(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return np.array(["yes"] * len(model_input))


mlflow.models.set_model(NoProbabilities())
"""


def _log_versions(uri: str, home: Path) -> None:
    import lightgbm as lgb
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    dataset = load_dataset(DataConfig(label_column="target"))
    x, y = dataset.features, dataset.frame[dataset.label_column]
    sample = x.head(3)
    booster = lgb.train(
        {"objective": "binary", "num_leaves": 7, "verbose": -1},
        lgb.Dataset(x, label=y),
        num_boost_round=10,
    )
    pipeline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(x, y)
    signature = infer_signature(sample, np.zeros(3))
    with mlflow.start_run():
        # A Booster from LightGBM's own API: no predict_proba, no sklearn flavor.
        mlflow.lightgbm.log_model(
            booster, name="m", registered_model_name="plain-lgbm", input_example=sample
        )
    with mlflow.start_run():
        # No signature: the inputs come from the pipeline's `feature_names_in_`.
        mlflow.sklearn.log_model(pipeline, name="m", registered_model_name="plain-sklearn")
    with mlflow.start_run():
        mlflow.pyfunc.log_model(
            name="m",
            python_model=_code(home, "positive_share.py", POSITIVE_SHARE),
            signature=signature,
            registered_model_name="plain-pyfunc",
        )
    with mlflow.start_run():
        mlflow.pyfunc.log_model(
            name="m",
            python_model=_code(home, "no_probabilities.py", NO_PROBABILITIES),
            signature=signature,
            registered_model_name="plain-labels",
        )


def _code(home: Path, name: str, text: str) -> str:
    path = home / name
    path.write_text(text)
    return str(path)


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalEndpointBackend]:
    home: Path = tmp_path_factory.mktemp("mlflow-only")
    uri = f"sqlite:///{home / 'mlflow.db'}"
    _log_versions(uri, home)
    backend = LocalEndpointBackend(home / "endpoints", TrackingSettings.resolve(uri))
    yield backend
    for state in backend.list_endpoints():
        backend.delete_endpoint(state.name)


def _serve(backend: LocalEndpointBackend, model_name: str) -> httpx.Response:
    endpoint = model_name.replace("plain-", "ep-")
    backend.create_or_update_endpoint(EndpointSpec(endpoint))
    backend.create_or_update_deployment(endpoint, DeploymentSpec("blue", ModelRef(model_name, "1")))
    backend.set_traffic(endpoint, TrafficSplit({"blue": 100}))
    state = backend.get_endpoint(endpoint)
    key = backend.get_keys(endpoint).get_secret_value()
    return httpx.post(
        state.scoring_uri,
        json=score_payload(),
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    )


@pytest.mark.parametrize("model_name", ["plain-lgbm", "plain-sklearn", "plain-pyfunc"])
def test_plain_mlflow_version_answers_probabilities(
    backend: LocalEndpointBackend, model_name: str
) -> None:
    response = _serve(backend, model_name)
    assert response.status_code == 200, response.text
    predictions = np.asarray(response.json()["predictions"])
    assert predictions.shape == (3, 2)
    assert np.allclose(predictions.sum(axis=1), 1.0)
    assert ((predictions >= 0) & (predictions <= 1)).all()


def test_pyfunc_without_probabilities_fails_to_deploy_with_reason(
    backend: LocalEndpointBackend,
) -> None:
    from modelferry.errors import DeploymentFailedError

    with pytest.raises(DeploymentFailedError, match=r"answered .* not probabilities"):
        _serve(backend, "plain-labels")
