"""How a reader can run an installed console script (`modelferry`, `mlflow`) from here."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path


def console_command(script: str, module: str) -> str:
    """The command that runs `script` as the reader can type it in the current folder.

    `script` when it is on PATH; else the script installed beside this Python (a
    virtualenv that is not activated), relative to the current folder when inside it;
    else `python -m module`.
    """
    if shutil.which(script):
        return script
    installed = Path(sys.executable).parent / script
    if installed.is_file():
        return _relative(installed)
    return f"{_relative(Path(sys.executable))} -m {module}"


def _relative(path: Path) -> str:
    try:
        relative = path.relative_to(Path.cwd())
    except ValueError:
        return str(path)
    # A bare name would be looked up on PATH; "./name" runs the file here.
    return str(relative) if len(relative.parts) > 1 else f".{os.sep}{relative}"
