"""A fleet rollout as a picture: per ring, how many devices had ended in each state, over time."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from modelferry.delivery.outcomes import DeviceResult, FleetResult
from modelferry.delivery.protocol.states import ERROR, SKIPPED, SUCCESS, TIMED_OUT
from modelferry.pictures import BAR_LINE, BASELINE, FAILED, NOT_JUDGED, PASSED, new_figure, save_png

#: What each band of a ring's panel counts, bottom to top.
_BANDS = (
    ("Success", (SUCCESS,), PASSED),
    ("Error", (ERROR,), FAILED),
    ("TimedOut", (TIMED_OUT,), NOT_JUDGED),
    ("Skipped", (SKIPPED,), BASELINE),
)
#: Points along the time axis; enough for a smooth curve at 100,000 devices.
_GRID_POINTS = 600


def save_fleet_chart(result: FleetResult, title: str, path: Path) -> Path:
    """Draw `result` to a PNG at `path`: one panel per ring, on one time axis.

    Each panel stacks, over the seconds since the rollout began, how many of the ring's
    devices had ended Success (green), Error (red), TimedOut (amber) or Skipped (grey);
    the dashed line is the ring's size, so the gap below it is what was still under way.
    Devices with no end time (a result from before end times were kept) are left out.
    """
    rings = sorted({row.ring for row in result.rows}) or [1]
    figure = new_figure(7.5, 1.9 * len(rings) + 1.4)
    verdict = f"aborted: {result.abort_reason}" if result.aborted else result.summary()
    figure.suptitle(f"{title}\n{verdict}", fontsize=10)
    axes = figure.subplots(len(rings), 1, sharex=True, squeeze=False)[:, 0]
    ended = _seconds_to_end(result)
    grid = np.linspace(0.0, max([*ended.values(), 1e-3]), _GRID_POINTS)
    for ax, ring in zip(axes, rings, strict=True):
        members = [row for row in result.rows if row.ring == ring]
        bands = []
        for _, states, _ in _BANDS:
            times = np.sort(
                [ended[r.device_id] for r in members if r.state in states and r.device_id in ended]
            )
            bands.append(np.searchsorted(times, grid, side="right"))
        ax.stackplot(grid, *bands, colors=[colour for *_, colour in _BANDS], step="post")
        ax.axhline(len(members), color=BAR_LINE, linestyle="--", linewidth=1.0)
        ax.set_ylim(0, max(len(members), 1) * 1.08)
        ax.set_ylabel("devices", fontsize=9)
        ax.tick_params(labelsize=8)
        canary = " (canary)" if len(rings) > 1 and ring < rings[-1] else ""
        ax.set_title(f"ring {ring}{canary}: {_counts(members)}", fontsize=9, loc="left")
    axes[-1].set_xlabel("seconds since the rollout began", fontsize=9)
    figure.legend(handles=_legend(result), loc="outside lower center", ncols=5, fontsize=8)
    return save_png(figure, path)


def _seconds_to_end(result: FleetResult) -> dict[str, float]:
    """Seconds from the rollout's start to each device's end, by device id."""
    ends = {row.device_id: row.finished_at for row in result.rows if row.finished_at}
    if not ends:
        return {}
    start = result.started_at or min(ends.values())
    return {device: max(0.0, (end - start).total_seconds()) for device, end in ends.items()}


def _counts(rows: list[DeviceResult]) -> str:
    counts = Counter(row.state for row in rows)
    listed = ", ".join(f"{counts[state]} {state}" for state in sorted(counts))
    return f"{len(rows)} device(s): {listed}" if rows else "no devices"


def _legend(result: FleetResult) -> list[object]:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    present = {row.state for row in result.rows}
    handles: list[object] = [
        Patch(color=colour, label=label)
        for label, states, colour in _BANDS
        if present & set(states)
    ]
    handles.append(Line2D([], [], color=BAR_LINE, linestyle="--", label="devices in the ring"))
    return handles
