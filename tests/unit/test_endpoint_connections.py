"""The endpoint server's connection limits as the environment sets them."""

from __future__ import annotations

import pytest

from modelferry.endpoints.local.connections import ConnectionLimits
from modelferry.errors import InvalidConfigError

LIMIT_VARIABLES = (
    "MODELFERRY_HEADER_TIMEOUT_S",
    "MODELFERRY_BODY_TIMEOUT_S",
    "MODELFERRY_MAX_CONNECTIONS",
)


def test_defaults_and_overrides_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in LIMIT_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert ConnectionLimits.from_env() == ConnectionLimits(10.0, 30.0, 1000)
    monkeypatch.setenv("MODELFERRY_HEADER_TIMEOUT_S", "2.5")
    monkeypatch.setenv("MODELFERRY_BODY_TIMEOUT_S", "4")
    monkeypatch.setenv("MODELFERRY_MAX_CONNECTIONS", "50")
    assert ConnectionLimits.from_env() == ConnectionLimits(2.5, 4.0, 50)


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
def test_a_bad_value_names_the_variable_to_fix(
    name: str, value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(InvalidConfigError, match=f"{name}: set it to ") as caught:
        ConnectionLimits.from_env()
    assert "above 0" in str(caught.value)
    others = set(LIMIT_VARIABLES) - {name}
    assert not any(other in str(caught.value) for other in others)


def test_the_cap_leaves_descriptors_for_the_server() -> None:
    import resource

    limits = ConnectionLimits(max_connections=10_000_000).within_descriptors()
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert limits.max_connections <= soft - 100
