"""The endpoint server's connection limits as the environment sets them."""

from __future__ import annotations

import pytest

from modelferry.endpoints.local.connections import ConnectionLimits


def test_defaults_and_overrides_from_the_environment() -> None:
    assert ConnectionLimits.from_env({}) == ConnectionLimits(10.0, 30.0, 1000)
    limits = ConnectionLimits.from_env(
        {
            "MODELFERRY_HEADER_TIMEOUT_S": "2.5",
            "MODELFERRY_BODY_TIMEOUT_S": "4",
            "MODELFERRY_MAX_CONNECTIONS": "50",
        }
    )
    assert limits == ConnectionLimits(2.5, 4.0, 50)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MODELFERRY_HEADER_TIMEOUT_S", "soon"),
        ("MODELFERRY_HEADER_TIMEOUT_S", "nan"),
        ("MODELFERRY_BODY_TIMEOUT_S", "inf"),
        ("MODELFERRY_BODY_TIMEOUT_S", "0"),
        ("MODELFERRY_MAX_CONNECTIONS", "1.5"),
        ("MODELFERRY_MAX_CONNECTIONS", "0"),
    ],
)
def test_a_bad_value_names_the_variables_to_fix(name: str, value: str) -> None:
    with pytest.raises(ValueError, match="MODELFERRY_MAX_CONNECTIONS") as caught:
        ConnectionLimits.from_env({name: value})
    assert "MODELFERRY_HEADER_TIMEOUT_S" in str(caught.value)


def test_the_cap_leaves_descriptors_for_the_server() -> None:
    import resource

    limits = ConnectionLimits(max_connections=10_000_000).within_descriptors()
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert limits.max_connections <= soft - 100
