"""Fresh virtual environments with the project installed as a user would install it.

pip's own download and wheel cache is shared with the developer's installs, so a venv
costs the unpacking, not the downloads.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def create_venv(folder: Path, install: Sequence[str], timeout: float = 800) -> Path:
    """Create a venv at `folder` and run `python -m pip install *install` in it from the
    repository root (so `.` and `constraints.txt` mean what they do in a checkout).

    Fails the test, with pip's output, when the install fails.
    """
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
    done = subprocess.run(
        [str(folder / "bin" / "python"), "-m", "pip", "install", "--quiet", *install],
        cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        pytest.fail(f"pip install {' '.join(install)} failed:\n{done.stdout}\n{done.stderr}")
    return folder
