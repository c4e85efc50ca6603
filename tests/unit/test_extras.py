"""A missing optional extra: one error type, naming the extra and its install command."""

from __future__ import annotations

import pickle

import pytest

from modelferry.errors import MissingExtraError, ModelferryError
from modelferry.extras import install_hint, requires_extra


def test_a_missing_library_names_the_extra_and_keeps_the_cause() -> None:
    with (
        pytest.raises(MissingExtraError) as caught,
        requires_extra("azure", "IoT Hub delivery", "the Azure SDKs"),
    ):
        import modelferry_test_no_such_sdk  # type: ignore[import-not-found]  # noqa: F401

    error = caught.value
    assert isinstance(error, ImportError)  # guards of optional imports keep working
    assert isinstance(error, ModelferryError)  # the CLI prints it as one line
    assert error.extra == "azure"
    assert str(error).startswith(
        "IoT Hub delivery cannot run without the Azure SDKs: pip install 'modelferry[azure]'"
    )
    assert "modelferry_test_no_such_sdk" in str(error)
    assert isinstance(error.__cause__, ModuleNotFoundError)


def test_an_inner_guard_is_not_wrapped_twice() -> None:
    with (
        pytest.raises(MissingExtraError) as caught,
        requires_extra("orchestrator", "outer"),
        requires_extra("azure", "inner"),
    ):
        raise ImportError("no azure")
    assert caught.value.extra == "azure"
    assert str(caught.value).startswith("inner cannot run without the 'azure' extra")


def test_other_errors_pass_through() -> None:
    with pytest.raises(ValueError, match="not an import"), requires_extra("azure", "x"):
        raise ValueError("not an import")


def test_the_error_survives_pickling_between_processes() -> None:
    error = MissingExtraError("needs azure", extra="azure")
    again = pickle.loads(pickle.dumps(error))
    assert isinstance(again, MissingExtraError)
    assert str(again) == "needs azure"


def test_the_hint_is_a_command_to_paste() -> None:
    assert install_hint("edge") == "pip install 'modelferry[edge]'"
