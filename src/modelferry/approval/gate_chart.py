"""The gate as a picture: each metric's champion and challenger, and the bar to clear."""

from __future__ import annotations

import math
from pathlib import Path

from modelferry.approval.gate import GateResult, MetricComparison
from modelferry.pictures import (
    BAR_LINE,
    BASELINE,
    FAILED,
    PASSED,
    UNJUDGED,
    new_figure,
    save_png,
)

#: The champion's mark: a ring, hollow, so a challenger's mark under it shows.
_RING_EDGE = 2.0


def save_gate_chart(gate: GateResult, title: str, path: Path) -> Path:
    """Draw `gate` to a PNG at `path`: one row per metric, values on the metric's own scale.

    Each row marks the champion (a grey ring) and the challenger (green when it clears its bars,
    red when it fails one, blue when the metric is not gated), and draws the value the
    bars come to as a line, labelled "needs >= 0.95" ("<=" where lower is better). Each
    row is zoomed to its values, so a difference in the third decimal shows. Values that
    could not be measured (NaN) are named in the row's title instead of drawn.
    """
    rows = gate.rows
    figure = new_figure(7.0, 0.95 * len(rows) + 1.0)
    verdict = "passed" if gate.passed else "FAILED"
    champion = f"champion v{gate.champion_version}" if gate.champion_version else "no champion"
    figure.suptitle(f"{title}\ngate {verdict} (against {champion})", fontsize=11)
    if rows:
        for ax, row in zip(figure.subplots(len(rows), 1, squeeze=False)[:, 0], rows, strict=True):
            _draw_metric(ax, row)
    figure.legend(handles=_legend(gate, champion), loc="outside lower center", ncols=3, fontsize=8)
    return save_png(figure, path)


def _legend(gate: GateResult, champion_label: str) -> list[object]:
    from matplotlib.lines import Line2D

    def marker(shape: str, colour: str, label: str) -> Line2D:
        return Line2D([], [], marker=shape, color=colour, linestyle="", markersize=8, label=label)

    # Only what the chart shows.
    rows = gate.rows
    ring = Line2D(
        [], [], marker="o", color=BASELINE, linestyle="", markersize=11,
        markerfacecolor="none", markeredgewidth=_RING_EDGE, label=champion_label,
    )  # fmt: skip
    handles = [ring] if gate.champion_version else []
    if any(row.gated and row.passed for row in rows):
        handles.append(marker("D", PASSED, "challenger: passes"))
    if any(not row.passed for row in rows):
        handles.append(marker("D", FAILED, "challenger: fails"))
    if any(not row.gated for row in rows):
        handles.append(marker("D", UNJUDGED, "challenger: not gated"))
    if any(row.required is not None for row in rows):
        handles.append(Line2D([], [], color=BAR_LINE, linestyle="--", label="bar to clear"))
    return list(handles)


def _draw_metric(ax: object, row: MetricComparison) -> None:
    from matplotlib.axes import Axes

    assert isinstance(ax, Axes)
    colour = UNJUDGED if not row.gated else PASSED if row.passed else FAILED
    outcome = "not gated" if not row.gated else "pass" if row.passed else "FAIL"
    direction = "higher" if row.higher_is_better else "lower"
    values: list[float] = []
    unmeasured: list[str] = []
    if row.champion is not None:
        if math.isfinite(row.champion):
            values.append(row.champion)
        else:
            unmeasured.append(f"champion {row.champion}")
    if math.isfinite(row.challenger):
        ax.plot([row.challenger], [0], "D", color=colour, markersize=9)
        values.append(row.challenger)
    else:
        unmeasured.append(f"challenger {row.challenger}")
    if row.champion is not None and math.isfinite(row.champion):
        # A ring over the challenger's mark: both show when they score the same.
        ax.plot(
            [row.champion], [0], "o", color=BASELINE, markersize=15,
            markerfacecolor="none", markeredgewidth=_RING_EDGE,
        )  # fmt: skip
    if row.required is not None:
        sign = ">=" if row.higher_is_better else "<="
        ax.axvline(row.required, color=BAR_LINE, linestyle="--", linewidth=1.2)
        ax.annotate(
            f"needs {sign} {row.required:.4f}",
            xy=(row.required, 0.45),
            xytext=(4, 0),
            textcoords="offset points",
            fontsize=8,
            va="center",
        )
        values.append(row.required)
    title = f"{row.metric} ({direction} is better): {outcome}"
    if unmeasured:
        title += f"; not measured: {', '.join(unmeasured)}"
    ax.set_title(title, fontsize=9, loc="left", color=colour if row.gated else BAR_LINE)
    if values:
        low, high = min(values), max(values)
        margin = max((high - low) * 0.25, abs(high) * 0.002, 1e-4)
        ax.set_xlim(low - margin, high + margin)
    ax.set_ylim(-1, 1)
    ax.set_yticks([])
    ax.tick_params(axis="x", labelsize=8)
