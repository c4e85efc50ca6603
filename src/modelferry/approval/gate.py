"""The metric gate: does the challenger beat the champion by the configured margins?"""

from __future__ import annotations

import math
from dataclasses import dataclass

from modelferry.config import GateConfig, MetricGate
from modelferry.metrics import HIGHER_IS_BETTER

#: Where the gate's chart is kept in the challenger's MLflow run.
GATE_CHART = "gate/gate.png"


@dataclass(frozen=True)
class MetricComparison:
    """One metric, challenger against champion, with the verdict of its gate (if any).

    `bars` says in words what the gate asks of the metric ("at least 0.9"): the bars that
    applied, so no improvement bar without a champion; empty when the metric is not gated.
    `required` is the value those bars come to together: the least (or, for a metric where
    lower is better, the most) the challenger may score and pass; None without a bar.
    """

    metric: str
    challenger: float
    champion: float | None
    higher_is_better: bool
    gated: bool
    failures: tuple[str, ...] = ()
    bars: tuple[str, ...] = ()
    required: float | None = None

    @property
    def passed(self) -> bool:
        """True when the metric is gated and clears every bar, or is not gated at all."""
        return not self.failures

    @property
    def improvement(self) -> float | None:
        """Challenger minus champion, read in the metric's good direction."""
        if self.champion is None:
            return None
        delta = self.challenger - self.champion
        return delta if self.higher_is_better else -delta


@dataclass(frozen=True)
class GateResult:
    """The gate's verdict and the side-by-side table behind it."""

    passed: bool
    champion_version: str | None
    rows: tuple[MetricComparison, ...]
    note: str | None = None

    @property
    def failures(self) -> list[str]:
        """Every reason the gate failed, one line each."""
        return [failure for row in self.rows for failure in row.failures]

    def to_table(self) -> dict[str, list[object]]:
        """The side-by-side table as columns (for MLflow's `log_table`), one row per metric.

        `champion` and `improvement` are None without a champion; `bars` are the bars that
        applied, joined by "; " (empty when the metric is not gated), and `required` the
        value they come to (None without a bar).
        """
        return {
            "metric": [row.metric for row in self.rows],
            "challenger": [row.challenger for row in self.rows],
            "champion": [row.champion for row in self.rows],
            "improvement": [row.improvement for row in self.rows],
            "higher_is_better": [row.higher_is_better for row in self.rows],
            "gated": [row.gated for row in self.rows],
            "passed": [row.passed for row in self.rows],
            "bars": ["; ".join(row.bars) for row in self.rows],
            "required": [row.required for row in self.rows],
            "failures": ["; ".join(row.failures) for row in self.rows],
        }

    def to_markdown(
        self, title: str, run_link: str | None = None, chart_link: str | None = None
    ) -> str:
        """A Markdown report: verdict, table of metrics, details, reasons, the MLflow run.

        With `run_link`, the report ends with the run and its gate chart: a link to the
        chart when `chart_link` gives its address, else the chart's name in the run.

        The table keeps to four short columns so that it fits the Prefect UI's narrow
        resume dialog; each metric's improvement and bars follow it as lines. Plain text
        only (no emoji), since the dialog's font may have no glyph for them.
        """
        verdict = "**passed**" if self.passed else "**FAILED**"
        champion = f"champion v{self.champion_version}" if self.champion_version else "no champion"
        lines = [f"### {title}", "", f"Gate {verdict} (against {champion}).", ""]
        if self.note:
            lines += [f"_{self.note}_", ""]
        lines += ["| metric | challenger | champion | gate |", "|---|---:|---:|---|"]
        for row in self.rows:
            champ = "none" if row.champion is None else _value(row.champion)
            verdict = "not gated" if not row.gated else "pass" if row.passed else "FAIL"
            lines.append(f"| {row.metric} | {_value(row.challenger)} | {champ} | {verdict} |")
        lines += ["", "Details:", *[f"- {_detail(row)}" for row in self.rows]]
        if self.failures:
            lines += ["", "Reasons:", *[f"- {failure}" for failure in self.failures]]
        if run_link:
            lines += ["", f"MLflow run: {_markdown_run_link(run_link)}"]
            chart = (
                f"[{GATE_CHART}]({chart_link})"
                if chart_link
                else f"`{GATE_CHART}` in its artifacts"
            )
            lines += ["", f"Gate chart: {chart}"]
        return "\n".join(lines)


def _value(value: float) -> str:
    """A metric value with four decimals; one that rounds to zero is `0.0000`, never `-0.0000`."""
    text = f"{value:.4f}"
    return "0.0000" if float(text) == 0 else text


def _delta(value: float) -> str:
    """A signed difference with four decimals; one that rounds to zero is `0` (no change)."""
    text = f"{value:+.4f}"
    return "0" if float(text) == 0 else text


def _bound(value: float, signed: bool = True) -> str:
    """A bound of the gate (`+0.01`, `-0.005`, `0.9`); zero is `0`, never `+0` or `-0`."""
    return "0" if value == 0 else f"{value:+g}" if signed else f"{value:g}"


def _percent(fraction: float) -> str:
    """A signed fraction as a percentage; one that rounds to zero is `0%`."""
    text = f"{fraction:+.2%}"
    return "0%" if float(text.rstrip("%")) == 0 else text


def _detail(row: MetricComparison) -> str:
    direction = "higher" if row.higher_is_better else "lower"
    text = f"{row.metric} ({direction} is better)"
    if row.improvement is not None:
        text += f": improvement {_delta(row.improvement)} on the champion"
    if not row.gated:
        return f"{text}; not gated"
    if not row.bars:
        return f"{text}; no bar applies until there is a champion"
    return f"{text}; needs {' and '.join(row.bars)}"


def _markdown_run_link(run_link: str) -> str:
    # A tracking server's URL becomes a link; a command for a local store is shown as
    # code, so that Markdown leaves its paths (underscores, `sqlite:///`) alone.
    if run_link.startswith(("http://", "https://")) and " " not in run_link:
        return f"[{run_link}]({run_link})"
    return f"`{run_link.replace('`', '')}`"


def evaluate_gate(
    challenger: dict[str, float],
    champion: dict[str, float] | None,
    config: GateConfig,
    champion_version: str | None = None,
    note: str | None = None,
) -> GateResult:
    """Compare metrics on the same test set against the gate in `config`.

    With no champion (`champion` is None) only the absolute thresholds apply.
    Metrics that are not gated still appear in the table.
    """
    rows = []
    for metric in sorted(challenger, key=lambda m: (m not in config.metrics, m)):
        gate = config.metrics.get(metric)  # type: ignore[call-overload]
        base = None if champion is None else champion.get(metric)
        failures = _check(metric, challenger[metric], base, gate) if gate is not None else ()
        rows.append(
            MetricComparison(
                metric=metric,
                challenger=challenger[metric],
                champion=base,
                higher_is_better=HIGHER_IS_BETTER.get(metric, True),
                gated=gate is not None,
                failures=failures,
                bars=_bars(metric, gate, base is not None) if gate is not None else (),
                required=_required(metric, gate, base) if gate is not None else None,
            )
        )
    missing = sorted(set(config.metrics) - set(challenger))
    if missing:
        raise ValueError(f"gated metrics {missing} were not computed for the challenger")
    passed = all(row.passed for row in rows)
    return GateResult(passed, champion_version, tuple(rows), note)


def _check(metric: str, value: float, champion: float | None, gate: MetricGate) -> tuple[str, ...]:
    # Every comparison with NaN is False, so a bar would not catch it: a value that could
    # not be measured (roc_auc on a test set of one class) fails the metric outright.
    if not math.isfinite(value):
        return (
            f"{metric} is {value} for the challenger: it could not be measured on this test "
            "set (does it hold both classes?), so the gate cannot pass it",
        )
    has_bar = gate.min_delta is not None or gate.min_relative_delta is not None
    if champion is not None and not math.isfinite(champion) and has_bar:
        return (
            f"{metric} is {champion} for the champion, so no improvement on it can be "
            "measured; the gate cannot pass the challenger",
        )
    higher = HIGHER_IS_BETTER.get(metric, True)
    failures = []
    if gate.threshold is not None:
        ok = value >= gate.threshold if higher else value <= gate.threshold
        if not ok:
            bound = "at least" if higher else "at most"
            failures.append(
                f"{metric} {_value(value)} must be {bound} {_bound(gate.threshold, signed=False)}"
            )
    if champion is None:
        return tuple(failures)
    improvement = (value - champion) if higher else (champion - value)
    if gate.min_delta is not None and improvement < gate.min_delta:
        failures.append(
            f"{metric} improves on the champion by {_delta(improvement)}; "
            f"the gate needs at least {_bound(gate.min_delta)}"
        )
    if gate.min_relative_delta is not None:
        relative = improvement / abs(champion) if champion else float("inf")
        if relative < gate.min_relative_delta:
            failures.append(
                f"{metric} improves on the champion by {_percent(relative)}; "
                f"the gate needs at least {_percent(gate.min_relative_delta)}"
            )
    return tuple(failures)


def _required(metric: str, gate: MetricGate, champion: float | None) -> float | None:
    """The tightest of the bars that apply, as a value of the metric itself."""
    higher = HIGHER_IS_BETTER.get(metric, True)
    sign = 1.0 if higher else -1.0
    bounds = [gate.threshold] if gate.threshold is not None else []
    if champion is not None and math.isfinite(champion):
        if gate.min_delta is not None:
            bounds.append(champion + sign * gate.min_delta)
        if gate.min_relative_delta is not None:
            bounds.append(champion + sign * gate.min_relative_delta * abs(champion))
    if not bounds:
        return None
    return max(bounds) if higher else min(bounds)


def _bars(metric: str, gate: MetricGate, has_champion: bool) -> tuple[str, ...]:
    """What `gate` asks of `metric`, in words; the improvement bars apply only with a champion."""
    higher = HIGHER_IS_BETTER.get(metric, True)
    bars = []
    if gate.threshold is not None:
        bars.append(f"{'at least' if higher else 'at most'} {_bound(gate.threshold, signed=False)}")
    if not has_champion:
        return tuple(bars)
    if gate.min_delta is not None:
        bars.append(f"an improvement of at least {_bound(gate.min_delta)}")
    if gate.min_relative_delta is not None:
        bars.append(f"a relative improvement of at least {_percent(gate.min_relative_delta)}")
    return tuple(bars)
