"""What the pictures modelferry draws share: a backend without a screen, colours, saving.

Pictures are PNG files logged to MLflow runs, where people would rather look than read:
the gate, a canary rollout's steps, a fleet's delivery. Drawing needs matplotlib, which
the orchestrator install has.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from matplotlib.figure import Figure

_log = logging.getLogger(__name__)

#: A bar, step or device that passed, failed, or was not judged; what it is compared with.
PASSED: Final = "#2e7d32"
FAILED: Final = "#c62828"
NOT_JUDGED: Final = "#f9a825"
BASELINE: Final = "#9e9e9e"
#: A value that nothing judges (a metric that is not gated).
UNJUDGED: Final = "#1565c0"
#: A bar a value must reach (a gate threshold).
BAR_LINE: Final = "#212121"


def new_figure(width: float, height: float) -> Figure:
    """A figure of `width` x `height` inches, drawn without a display (the Agg backend)."""
    # The object-oriented API: no pyplot state, so no backend is switched for the process
    # and figures are freed with their last reference.
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def save_png(figure: Figure, path: Path) -> Path:
    """Write `figure` to `path` as PNG; returns `path`."""
    figure.savefig(path, format="png")
    return path


def draw_picture(draw: Callable[[Path], Path], path: Path) -> bool:
    """Call `draw(path)`; True when it drew, False (with a warning saying why) when it failed.

    A picture only shows what the run decided, so one that cannot be drawn (matplotlib
    missing, a value it cannot place) is left out rather than undoing the run.
    """
    try:
        draw(path)
    except Exception as exc:
        _log.warning("Left out the picture %s: %s: %s", path.name, type(exc).__name__, exc)
        return False
    return True


def picture_name(folder: str, subject: str, at: datetime) -> str:
    """An artifact path for a picture of `subject` at `at`: `folder/subject-20261207T020000Z.png`.

    Characters other than letters, digits, `_`, `.` and `-` in `subject` become `-`, so a
    name from a config or a device list stays one path segment.
    """
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", subject).strip("-.") or "picture"
    return f"{folder}/{safe}-{at.astimezone(UTC).strftime('%Y%m%dT%H%M%SZ')}.png"
