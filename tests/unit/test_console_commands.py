"""A command printed for the reader runs as typed from the current folder."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from modelferry.console_commands import console_command


@pytest.fixture
def venv_bin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A virtualenv's bin folder holding this Python, not on PATH."""
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    monkeypatch.setattr(sys, "executable", str(bin_dir / "python"))
    monkeypatch.setattr(shutil, "which", lambda name: None)
    return bin_dir


def test_a_script_on_path_is_named_bare(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/local/bin/{name}")
    assert console_command("mlflow", "mlflow") == "mlflow"


def test_a_script_beside_python_is_given_relative_to_the_current_folder(
    venv_bin: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (venv_bin / "mlflow").write_text("#!/bin/sh\n", encoding="utf-8")
    monkeypatch.chdir(venv_bin.parent.parent)
    assert console_command("mlflow", "mlflow") == "venv/bin/mlflow"
    monkeypatch.chdir(venv_bin)
    assert console_command("mlflow", "mlflow") == "./mlflow"


def test_a_script_beside_python_outside_the_current_folder_is_given_whole(
    venv_bin: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (venv_bin / "mlflow").write_text("#!/bin/sh\n", encoding="utf-8")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert console_command("mlflow", "mlflow") == str(venv_bin / "mlflow")


def test_without_the_script_python_runs_the_module(
    venv_bin: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(venv_bin.parent.parent)
    assert console_command("modelferry", "modelferry.cli") == "venv/bin/python -m modelferry.cli"
