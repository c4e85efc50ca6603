"""Each deployment describes its scoring API in /openapi.json and /swagger.json."""

from __future__ import annotations

from typing import Any

import pytest
from openapi_schema_validator import OAS30Validator
from openapi_spec_validator import validate
from pydantic import SecretStr

from modelferry.endpoints.spec import TrafficSplit
from modelferry.serving.app import ScoringApp
from modelferry.serving.model import ServingModel
from modelferry.serving.routing import RoutingTable
from modelferry.serving.schema import FeatureSpec
from tests.scoring_app import COLUMNS, DATA, breast_cancer_model, call

KEY = "k-openapi"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def model() -> ServingModel:
    return breast_cancer_model()


def app_with(models: dict[str, ServingModel], traffic: dict[str, int]) -> ScoringApp:
    app = ScoringApp("bc", SecretStr(KEY))
    app.install(RoutingTable.build(models, TrafficSplit(traffic)))
    return app


def get(app: ScoringApp, url: str, **headers: str) -> Any:
    [response] = call(app, [{"method": "GET", "url": url, "headers": {**AUTH, **headers}}])
    return response


def request_validator(document: dict[str, Any]) -> OAS30Validator:
    """Validates a request body against the document's request schema, `$ref`s resolved."""
    body = document["paths"]["/score"]["post"]["requestBody"]["content"]["application/json"]
    # The request schema beside the components, so that its "#/components/..." resolve.
    return OAS30Validator({**body["schema"], "components": document["components"]})


def test_the_openapi_document_is_valid_and_its_example_scores(model: ServingModel) -> None:
    app = app_with({"blue": model}, {"blue": 100})

    answer = get(app, "/openapi.json")

    assert answer.status_code == 200
    assert answer.headers["azureml-model-deployment"] == "blue"
    document = answer.json()
    validate(document)
    assert document["openapi"] == "3.0.3"
    assert document["info"]["title"] == "bc/blue: m v1"
    example = document["components"]["schemas"]["InputData"]["example"]
    assert example["input_data"]["columns"] == COLUMNS
    [scored] = call(app, [{"method": "POST", "url": "/score", "json": example, "headers": AUTH}])
    assert scored.status_code == 200, scored.text
    answer_schema = document["components"]["schemas"]["Predictions"]["properties"]
    assert answer_schema["classes"]["items"]["enum"] == scored.json()["classes"]
    assert answer_schema["predictions"]["items"]["maxItems"] == 2


def test_the_request_schema_takes_what_the_server_takes(model: ServingModel) -> None:
    document = get(app_with({"blue": model}, {"blue": 100}), "/openapi.json").json()
    validator = request_validator(document)
    row = DATA.data.iloc[0]
    good = [
        {"input_data": {"columns": COLUMNS, "data": [row.tolist()]}},
        {"dataframe_split": {"columns": COLUMNS, "data": [row.tolist()]}},
        {"dataframe_records": [row.to_dict()]},
        {"inputs": [row.tolist()]},
    ]
    for body in good:
        assert validator.is_valid(body), body
    short = {c: v for c, v in row.to_dict().items() if c != COLUMNS[0]}
    bad = [
        {"dataframe_records": [short]},  # a column missing
        {"dataframe_records": [{**row.to_dict(), "extra": 1.0}]},  # one the model lacks
        {"inputs": [row.tolist()[:-1]]},  # a row too short
        {"input_data": {"columns": COLUMNS, "data": [["x"] * len(COLUMNS)]}},  # not numbers
        {"rows": [row.tolist()]},  # no known shape
    ]
    for body in bad:
        assert not validator.is_valid(body), body


def test_swagger_json_gives_swagger_2_unless_asked_for_3(model: ServingModel) -> None:
    app = app_with({"blue": model}, {"blue": 100})

    two = get(app, "/swagger.json")
    three = get(app, "/swagger.json?version=3")
    unknown = get(app, "/swagger.json?version=4")

    assert two.status_code == 200
    validate(two.json())
    assert two.json()["swagger"] == "2.0"
    assert two.json()["paths"]["/score"]["post"]["parameters"][0]["in"] == "body"
    assert three.json() == get(app, "/openapi.json").json()
    assert unknown.status_code == 404
    assert unknown.json()["error"] == "no API document version '4'; 2, 2.0, 3, 3.0"


def test_the_document_is_of_the_deployment_asked_for_or_the_busiest(
    model: ServingModel,
) -> None:
    other = ServingModel(
        "m", "2", (FeatureSpec("only", "long", required=False),), ("a", "b"), model.predictor
    )
    app = app_with({"blue": model, "green": other}, {"blue": 30, "green": 70})

    busiest = get(app, "/openapi.json").json()
    pinned = get(app, "/openapi.json", **{"azureml-model-deployment": "blue"}).json()
    missing = get(app, "/openapi.json", **{"azureml-model-deployment": "red"})

    assert busiest["info"]["title"] == "bc/green: m v2"
    record = busiest["components"]["schemas"]["DataframeRecords"]["properties"]
    assert record["dataframe_records"]["items"]["properties"] == {
        "only": {"type": "integer", "nullable": True}
    }
    assert pinned["info"]["title"] == "bc/blue: m v1"
    assert missing.status_code == 404


def test_the_document_needs_the_key_and_a_loaded_deployment(model: ServingModel) -> None:
    app = app_with({"blue": model}, {"blue": 100})
    empty = ScoringApp("bc", SecretStr(KEY))

    no_key, posted = call(
        app,
        [{"method": "GET", "url": "/openapi.json"}, {"method": "POST", "url": "/swagger.json"}],
    )

    assert no_key.status_code == 401
    assert (posted.status_code, posted.headers["allow"]) == (405, "GET")
    assert get(empty, "/openapi.json").status_code == 503


def test_a_new_routing_table_gives_the_new_models_document(model: ServingModel) -> None:
    app = app_with({"blue": model}, {"blue": 100})
    assert get(app, "/openapi.json").json()["info"]["version"] == "1"
    newer = ServingModel("m", "7", model.features, model.class_names, model.predictor)

    app.install(RoutingTable.build({"blue": newer}, TrafficSplit({"blue": 100})))

    assert get(app, "/openapi.json").json()["info"]["version"] == "7"
