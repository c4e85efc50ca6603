"""Azure ML names: valid, deterministic, unchanged when already valid, never colliding."""

from __future__ import annotations

import itertools
import re

import pytest

from modelferry.endpoints.naming import MAX_NAME_LENGTH, azure_name, endpoint_name
from modelferry.errors import InvalidEndpointSpecError

AZURE_RULE = re.compile(r"^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$")


def assert_valid(name: str, max_length: int = MAX_NAME_LENGTH) -> None:
    assert AZURE_RULE.match(name), name
    assert 3 <= len(name) <= max_length, name
    assert name == name.lower(), name


@pytest.mark.parametrize(
    "name",
    ["blue", "green", "abc", "churn-model", "a--b", "m1x", "a" * 32, "breast-cancer-classifier"],
)
def test_valid_names_are_kept(name: str) -> None:
    assert azure_name(name) == name


@pytest.mark.parametrize(
    ("name", "prefix"),
    [
        ("my_model", "my-model-"),
        ("My-Model", "my-model-"),
        ("Breast Cancer v2", "breast-cancer-v2-"),
        ("model.v1", "model-v1-"),
        ("a__b..c", "a-b-c-"),
        ("-leading-dash", "leading-dash-"),
        ("trailing-dash-", "trailing-dash-"),
        ("1st-model", "m-1st-model-"),
        ("42", "m-42-"),
        ("___", "m-"),
        ("", "m-"),
        ("ab", "ab-"),
        ("x", "x-"),
        ("Ünïcödé modèl", "n-c-d-mod-l-"),
        ("a" * 33, "a" * 23 + "-"),
        ("churn/model:prod@eu", "churn-model-prod-eu-"),
    ],
)
def test_invalid_names_are_cleaned_and_hashed(name: str, prefix: str) -> None:
    result = azure_name(name)
    assert_valid(result)
    assert result.startswith(prefix), result
    assert re.fullmatch(re.escape(prefix) + r"[0-9a-f]{8}", result), result
    assert "--" not in result  # runs of invalid characters become one dash


@pytest.mark.parametrize("name", ["my_model", "A" * 80, "1", "Ünïcödé", "blue"])
def test_deterministic_and_a_fixed_point(name: str) -> None:
    once = azure_name(name)
    assert azure_name(name) == once
    assert azure_name(once) == once  # passing an Azure name again changes nothing


@pytest.mark.parametrize("max_length", [12, 20, 63, 255])
def test_max_length(max_length: int) -> None:
    for name in ["x" * 300, "Model_" * 50, "ok-name"]:
        result = azure_name(name, max_length=max_length)
        assert len(result) <= max_length
        assert AZURE_RULE.match(result)


def test_max_length_must_leave_room_for_the_hash() -> None:
    with pytest.raises(ValueError, match="too short"):
        azure_name("anything", max_length=11)


def test_similar_names_do_not_collide() -> None:
    variants = ["my_model", "my-model", "My-Model", "my.model", "my model", "MY_MODEL", "my__model"]
    assert len({azure_name(v) for v in variants}) == len(variants)


def test_no_collisions_over_many_generated_names() -> None:
    # Names built to stress the cleaner: same letters, different separators and case,
    # long names that share a truncated prefix and differ only at the end.
    parts = ["churn", "Churn", "fraud", "model", "v1", "V1", "2", ""]
    separators = ["-", "_", ".", " ", "--", "/", ""]
    names = {a + s + b for a, s, b in itertools.product(parts, separators, parts)}
    names |= {"x" * 40 + str(i) for i in range(3000)}
    names |= {f"model_{i}" for i in range(3000)}
    names |= {f"Model-{i}" for i in range(3000)}
    results = {}
    for name in names:
        result = azure_name(name)
        assert_valid(result)
        assert results.setdefault(result, name) == name, f"{name!r} and {results[result]!r}"
    assert len(results) == len(names)


@pytest.mark.parametrize(
    ("model", "suffix", "expected"),
    [
        ("churn", "prod-weu", "churn-prod-weu"),
        ("breast-cancer-classifier", "prod", "breast-cancer-classifier-prod"),
    ],
)
def test_endpoint_name_plain(model: str, suffix: str, expected: str) -> None:
    assert endpoint_name(model, suffix) == expected


@pytest.mark.parametrize(
    ("model", "suffix"),
    [
        ("breast-cancer-classifier", "staging-weu"),
        ("Breast_Cancer", "prod"),
        ("x" * 100, "a1b2c3d4e5f6a7b8"),
        ("7", "prod"),
        ("___", "p"),
    ],
)
def test_endpoint_name_keeps_the_suffix(model: str, suffix: str) -> None:
    result = endpoint_name(model, suffix)
    assert_valid(result)
    assert result.endswith("-" + suffix)
    assert azure_name(result) == result
    assert endpoint_name(model + "2", suffix) != result


@pytest.mark.parametrize("suffix", ["", "Prod", "prod_eu", "-prod", "prod-", "a" * 17])
def test_endpoint_name_rejects_bad_suffixes(suffix: str) -> None:
    with pytest.raises(InvalidEndpointSpecError, match="suffix"):
        endpoint_name("churn", suffix)
