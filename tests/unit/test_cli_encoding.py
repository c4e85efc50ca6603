"""Names stdout's encoding cannot hold never fail a command after it did its work."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def _status(root: Path, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelferry.cli", "agent", "status", "--root", str(root), *options],
        env={**os.environ, "PYTHONIOENCODING": "ascii"},
        capture_output=True,
        text=True,
        encoding="ascii",
        timeout=120,
        check=False,
    )


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """An agent root whose current package has a non-ASCII id."""
    (tmp_path / "versions" / "modèle" / "1.0").mkdir(parents=True)
    (tmp_path / "current").symlink_to("versions/modèle/1.0")
    return tmp_path


def test_json_on_an_ascii_stdout_is_the_same_document_escaped(root: Path) -> None:
    done = _status(root, "--output", "json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["current"]["package_id"] == "modèle"


def test_text_on_an_ascii_stdout_shows_the_name_escaped(root: Path) -> None:
    done = _status(root)
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.splitlines()[0] == "current: mod\\xe8le/1.0"
