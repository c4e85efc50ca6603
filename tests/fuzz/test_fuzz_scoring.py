"""Generated hostile requests against one real scoring server process.

Whatever the body, headers or content type, the server answers with a client error (or
200), never a 500, and a good request right after is still answered 200.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelferry.endpoints.local import LocalEndpointBackend
from modelferry.endpoints.spec import DeploymentSpec, EndpointSpec, ModelRef, TrafficSplit
from tests.model_fixtures import MODEL_NAME, register_versions, score_payload

pytestmark = [pytest.mark.fuzz, pytest.mark.integration]

GOOD = score_payload(2)
COLUMNS: list[str] = GOOD["input_data"]["columns"]


class Endpoint:
    def __init__(self, uri: str, key: str) -> None:
        self.uri = uri
        self.key = key
        self.client = httpx.Client(timeout=30)


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoint]:
    home = tmp_path_factory.mktemp("fuzz-scoring")
    backend = LocalEndpointBackend(home / "endpoints", register_versions(home, count=1))
    backend.create_or_update_endpoint(EndpointSpec("fz"))
    backend.create_or_update_deployment("fz", DeploymentSpec("blue", ModelRef(MODEL_NAME, "1")))
    backend.set_traffic("fz", TrafficSplit({"blue": 100}))
    target = Endpoint(
        backend.get_endpoint("fz").scoring_uri, backend.get_keys("fz").get_secret_value()
    )
    yield target
    target.client.close()
    backend.delete_endpoint("fz")


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=30,
)
cells = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(min_value=-(2**53), max_value=2**53),
    st.none(),
    st.booleans(),
    st.text(max_size=5),
    st.lists(st.floats(allow_nan=False), max_size=2),
)


@st.composite
def documents(draw: st.DrawFn) -> bytes:
    """A JSON body: near-valid scoring shapes, random JSON, deep nesting or raw bytes."""
    kind = draw(st.sampled_from(["shape", "random", "deep", "literal", "bytes"]))
    if kind == "bytes":
        return draw(st.binary(max_size=300))
    if kind == "deep":
        depth = draw(st.integers(min_value=100, max_value=5000))
        opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
        return (opener * depth + "1" + closer * depth).encode()
    if kind == "literal":
        literal = draw(st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "9" * 400]))
        row = ", ".join([literal] + ["1.0"] * (len(COLUMNS) - 1))
        return f'{{"inputs": [[{row}]]}}'.encode()
    if kind == "random":
        return orjson.dumps(draw(json_values))
    fmt = draw(st.sampled_from(["input_data", "dataframe_split", "dataframe_records", "inputs"]))
    width = draw(st.sampled_from([len(COLUMNS), len(COLUMNS) - 1, len(COLUMNS) + 1, 0, 1]))
    rows = draw(st.lists(st.lists(cells, min_size=width, max_size=width), max_size=4))
    columns: Any = draw(st.sampled_from([COLUMNS, COLUMNS[::-1], COLUMNS[:-1], [], ["x"] * width]))
    document: Any
    if fmt == "dataframe_records":
        document = {fmt: [dict(zip(columns, row, strict=False)) for row in rows]}
    elif fmt == "inputs":
        document = {fmt: rows}
    else:
        document = {fmt: {"columns": columns, "data": rows}}
    return orjson.dumps(document)


# HTTP header values a client can send: visible ASCII, inner spaces only (h11 refuses others).
header_values = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40
).map(str.strip)


@st.composite
def headers(draw: st.DrawFn, key: str) -> dict[str, str]:
    auth = draw(
        st.sampled_from(
            [f"Bearer {key}", f"Bearer {key}", "", f"bearer {key}", f"Bearer {key}x", "Basic Zm9v"]
        )
    )
    out = {
        "content-type": draw(
            st.sampled_from(
                [
                    "application/json",
                    "text/plain",
                    "",
                    "application/json; charset=latin-1",
                    "multipart/form-data",
                ]
            )
        )
    }
    if auth:
        out["authorization"] = auth
    if draw(st.booleans()):
        out["azureml-model-deployment"] = draw(
            st.sampled_from(["blue", "green", "", "BLUE"]) | header_values
        )
    return out


def _assert_alive(endpoint: Endpoint) -> None:
    response = endpoint.client.post(
        endpoint.uri, json=GOOD, headers={"Authorization": f"Bearer {endpoint.key}"}
    )
    assert response.status_code == 200, response.text
    assert all(math.isclose(sum(p), 1.0) for p in response.json()["predictions"])


@settings(max_examples=50)
@given(data=st.data())
def test_scoring_never_answers_500(endpoint: Endpoint, data: st.DataObject) -> None:
    body = data.draw(documents())
    sent = data.draw(headers(endpoint.key))
    response = endpoint.client.post(endpoint.uri, content=body, headers=sent)
    assert response.status_code < 500 or response.status_code == 503, response.text
    if response.status_code == 503:
        # only "no deployment takes traffic" or the large-request cap may say 503
        assert "error" in response.json()
    _assert_alive(endpoint)


@settings(max_examples=15)
@given(
    method=st.sampled_from(["GET", "PUT", "DELETE", "PATCH", "POST", "HEAD"]),
    path=st.sampled_from(
        ["/score", "/health/live", "/health/ready", "/metrics", "/admin/metrics", "/x"]
    ),
    query=st.sampled_from(["", "since=abc", "since=nan", "since=1e999", "since=%ff"]),
)
def test_any_route_and_method_never_500(
    endpoint: Endpoint, method: str, path: str, query: str
) -> None:
    base = endpoint.uri.removesuffix("/score")
    response = endpoint.client.request(method, f"{base}{path}?{query}")
    assert response.status_code < 500 or (path == "/health/ready" and response.status_code == 503)
    _assert_alive(endpoint)
