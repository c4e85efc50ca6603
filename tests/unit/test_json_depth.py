"""Nesting depth of JSON counted without recursion, the guard before every hostile parse."""

from __future__ import annotations

import json

import pytest

from modelferry.json_depth import nesting_depth


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        ("1", 0),
        ("[]", 1),
        ('{"a": [1, {"b": []}]}', 4),
        ('{"a": "[[[[{{{{"}', 1),
        ('{"a": "quote \\" then [[[["}', 1),
        ('["\\\\", [[]]]', 3),
        ("[" * 100_000 + "]" * 100_000, 100_000),
    ],
)
def test_depth_ignores_brackets_inside_strings(text: str, depth: int) -> None:
    assert nesting_depth(text) == depth
    assert nesting_depth(text.encode()) == depth


def test_counting_stops_just_past_the_limit() -> None:
    assert nesting_depth("[" * 100_000, stop_above=32) == 33


def test_a_document_json_can_parse_is_measured_like_its_structure() -> None:
    document = {"x": [{"y": [[1, "]]"]]}]}
    assert nesting_depth(json.dumps(document)) == 5
