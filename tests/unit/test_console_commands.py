"""A command printed for the reader runs as typed from the current folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from modelferry.console_commands import console_command


def test_a_script_on_path_is_named_bare(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/local/bin/{name}")
    assert console_command("mlflow", "mlflow") == "mlflow"


def test_a_script_beside_python_is_given_relative_to_the_current_folder(
    unactivated_venv: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (unactivated_venv / "mlflow").write_text("#!/bin/sh\n", encoding="utf-8")
    assert console_command("mlflow", "mlflow") == ".venv/bin/mlflow"
    monkeypatch.chdir(unactivated_venv)
    assert console_command("mlflow", "mlflow") == "./mlflow"


def test_a_script_beside_python_outside_the_current_folder_is_given_whole(
    unactivated_venv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (unactivated_venv / "mlflow").write_text("#!/bin/sh\n", encoding="utf-8")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert console_command("mlflow", "mlflow") == str(unactivated_venv / "mlflow")


def test_without_the_script_python_runs_the_module(unactivated_venv: Path) -> None:
    assert console_command("modelferry", "modelferry.cli") == ".venv/bin/python -m modelferry.cli"
