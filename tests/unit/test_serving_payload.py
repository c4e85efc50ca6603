"""Request parsing: every accepted shape, and a named reason for every refusal."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import orjson
import pytest

from modelferry.serving.payload import PayloadError, parse_request
from modelferry.serving.schema import FeatureSpec

FEATURES = (FeatureSpec("a", "double"), FeatureSpec("b", "double"), FeatureSpec("n", "long"))
ROWS = [[1.0, 2.0, 3], [4.0, 5.5, 6]]
EXPECTED = np.array([[1.0, 2.0, 3.0], [4.0, 5.5, 6.0]])


def parse(document: Any, max_rows: int = 100) -> np.ndarray:
    return parse_request(orjson.dumps(document), FEATURES, max_rows)


@pytest.mark.parametrize(
    "document",
    [
        {"input_data": {"columns": ["a", "b", "n"], "index": [0, 1], "data": ROWS}},
        {"input_data": ROWS},
        {"dataframe_split": {"columns": ["a", "b", "n"], "data": ROWS}},
        {"dataframe_split": {"columns": ["n", "b", "a"], "data": [[3, 2.0, 1.0], [6, 5.5, 4.0]]}},
        {"dataframe_records": [{"a": 1.0, "b": 2.0, "n": 3}, {"n": 6, "a": 4.0, "b": 5.5}]},
        {"inputs": ROWS},
        {"inputs": {"b": [2.0, 5.5], "a": [1.0, 4.0], "n": [3, 6]}},
    ],
)
def test_accepted_shapes_give_the_same_matrix(document: dict[str, Any]) -> None:
    matrix = parse(document)
    np.testing.assert_array_equal(matrix, EXPECTED)
    assert matrix.dtype == np.float64
    assert matrix.flags["C_CONTIGUOUS"]


@pytest.mark.parametrize(
    ("document", "fragment"),
    [
        ({"input_data": {"columns": ["a", "b"], "data": [[1, 2]]}}, "missing column(s) ['n']"),
        (
            {"input_data": {"columns": ["a", "b", "n", "z"], "data": [[1, 2, 3, 4]]}},
            "unexpected column(s) ['z']",
        ),
        ({"input_data": {"columns": ["a", "b", "n"], "data": [[1, "x", 3]]}}, "column 'b'"),
        ({"input_data": {"columns": ["a", "b", "n"], "data": [[1, 2]]}}, "row 0 has 2 values"),
        ({"input_data": {"columns": ["a", "b", "n"], "data": [[1, None, 3]]}}, "column 'b' needs"),
        ({"input_data": {"columns": ["a", "b", "n"], "data": [[1, 2, 3.5]]}}, "whole numbers"),
        ({"input_data": {"columns": ["a", "b", "n"], "data": []}}, "no rows"),
        ({"records": []}, "exactly one of"),
        ([1, 2], "JSON object"),
        ({"dataframe_records": [{"a": 1, "b": 2}]}, "missing column(s) ['n']"),
        ({"dataframe_records": [{"a": 1, "b": 2, "n": 3}, {"a": 1}]}, "lacks column"),
        ({"inputs": {"a": [1], "b": [1, 2], "n": [1]}}, "equal length"),
    ],
)
def test_refusals_name_what_is_wrong(document: Any, fragment: str) -> None:
    with pytest.raises(PayloadError) as info:
        parse(document)
    assert fragment in str(info.value)
    assert info.value.status == 400


def test_invalid_json_and_row_limit() -> None:
    with pytest.raises(PayloadError, match="not valid JSON"):
        parse_request(b"{nope", FEATURES, 10)
    with pytest.raises(PayloadError) as info:
        parse({"inputs": ROWS * 3}, max_rows=5)
    assert info.value.status == 413


def test_optional_column_may_be_missing() -> None:
    features = (FeatureSpec("a", "double"), FeatureSpec("b", "double", required=False))
    matrix = parse_request(orjson.dumps({"inputs": [[1.0, None]]}), features, 10)
    assert math.isnan(matrix[0, 1])
