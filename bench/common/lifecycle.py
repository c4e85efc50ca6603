"""What every benchmark run does around its measurements: log, work dir, interruption."""

from __future__ import annotations

import contextlib
import signal
import sys
import tempfile
from datetime import datetime
from pathlib import Path
from types import FrameType


def log(message: str) -> None:
    """A timestamped progress line on stderr (the report goes to stdout)."""
    print(f"[{datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


def interrupt_on_termination() -> None:
    """Turn SIGTERM and SIGHUP into KeyboardInterrupt, so cleanup runs as on Ctrl-C."""
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGHUP, _raise_interrupt)


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def work_dir(stack: contextlib.ExitStack, prefix: str, keep: bool) -> Path:
    """A fresh temporary folder, removed when `stack` closes unless `keep`."""
    if keep:
        return Path(tempfile.mkdtemp(prefix=prefix))
    return Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=prefix)))
