"""Run one command and report its wall time, CPU time and peak resident memory.

    python -m bench.common.peak_rss RESULT.json -- COMMAND [ARG ...]

A small launcher, standard library only: a child's peak RSS (`ru_maxrss`) counts the
memory of the process it was forked from, so the command is forked from this small
process rather than from a benchmark that has loaded numpy, LightGBM and MLflow. The peak
is that of the largest process in the command's tree (what `wait4` reports), in KiB.
Writes ``{"returncode", "wall_s", "cpu_s", "max_rss_kib"}`` to RESULT.json and exits
with the command's status.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    """Run the command after ``--``, write what it used to the result file."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 3 or args[1] != "--":
        print(__doc__, file=sys.stderr)
        return 2
    result, command = Path(args[0]), args[2:]
    started = time.monotonic()
    process = subprocess.Popen(command)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.monotonic() - started
    process.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    result.write_text(
        json.dumps(
            {
                "returncode": process.returncode,
                "wall_s": wall,
                "cpu_s": usage.ru_utime + usage.ru_stime,
                "max_rss_kib": usage.ru_maxrss,
            }
        )
    )
    return 0 if process.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
