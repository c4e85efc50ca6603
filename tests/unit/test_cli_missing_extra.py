"""A command that needs an extra the install lacks says which extra, in one line.

The missing module is made unimportable for the test (`sys.modules[name] = None` makes
`import name` raise ModuleNotFoundError, as on an install without it); the command runs
its real code up to that import.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import modelferry.config
from modelferry.cli import _extras_providing, main

WORKSPACE = ["--subscription-id", "sub", "--resource-group", "rg", "--workspace", "ws"]


def test_azure_ml_endpoints_without_mlflow_name_the_orchestrator_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The Azure SDKs are there (the azure extra); MLflow, from the orchestrator, is not.
    monkeypatch.setitem(sys.modules, "mlflow", None)
    code = main(["endpoints", "list", "--backend", "azureml", *WORKSPACE])
    captured = capsys.readouterr()
    assert code == 1
    assert captured.err == (
        "modelferry: error: modelferry endpoints list needs the 'orchestrator' extra: "
        "pip install 'modelferry[orchestrator]' (no module named 'mlflow')\n"
    )
    assert captured.out == ""


def test_a_missing_module_of_no_extra_asks_for_a_reinstall(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "modelferry.config", None)
    code = main(["validate", "config/model_config.json"])
    (line,) = capsys.readouterr().err.splitlines()
    assert code == 1
    assert line.startswith("modelferry: error: modelferry validate cannot import 'modelferry")
    assert "reinstall modelferry" in line


def test_a_missing_core_requirement_asks_for_a_reinstall(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = tmp_path / "model.yaml"
    config.write_text("experiment_name: x\n", encoding="utf-8")
    monkeypatch.setitem(sys.modules, "yaml", None)
    monkeypatch.delitem(sys.modules, "modelferry.config_files", raising=False)
    monkeypatch.delitem(sys.modules, "modelferry.config", raising=False)
    assert main(["validate", str(config)]) == 1
    assert capsys.readouterr().err == (
        "modelferry: error: modelferry validate cannot import 'yaml': reinstall modelferry "
        "(import of yaml halted; None in sys.modules)\n"
    )


def test_a_module_modelferry_does_not_install_is_not_blamed_on_the_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A bug (an import of an undeclared library) keeps its traceback: no "reinstall".
    def load_config(path: str) -> None:
        import modelferry_test_undeclared_library  # type: ignore[import-not-found]  # noqa: F401

    monkeypatch.setattr(modelferry.config, "load_config", load_config)
    with pytest.raises(ModuleNotFoundError, match="modelferry_test_undeclared_library"):
        main(["validate", "config/model_config.json"])
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    ("module", "extras"),
    [
        ("prefect", ["orchestrator", "approval"]),
        ("sklearn", ["orchestrator", "edge"]),
        ("psycopg", ["orchestrator"]),
        ("azure", ["azure"]),
        ("yaml", []),
    ],
)
def test_the_extras_of_a_module_come_from_the_package_metadata(
    module: str, extras: list[str]
) -> None:
    assert _extras_providing(module) == extras
