"""A reader that closes the pipe early ends the command quietly, never with a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from modelferry.cli import EXIT_BROKEN_PIPE


def test_a_closed_pipe_ends_the_command_without_a_traceback(tmp_path: Path) -> None:
    # `modelferry endpoints list --output json | head -c 0`: the reader is gone before the
    # command writes its first byte.
    command = [
        sys.executable,
        "-c",
        "import sys; from modelferry.cli import main; sys.exit(main(sys.argv[1:]))",
        "endpoints",
        "list",
        "--output",
        "json",
        "--home",
        str(tmp_path / "endpoints"),
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None
    process.stdout.close()
    _, err = process.communicate(timeout=60)
    assert b"Traceback" not in err, err.decode()
    assert process.returncode == EXIT_BROKEN_PIPE
