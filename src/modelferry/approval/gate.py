"""The metric gate: does the challenger beat the champion by the configured margins?"""

from __future__ import annotations

from dataclasses import dataclass

from modelferry.config import GateConfig, MetricGate
from modelferry.metrics import HIGHER_IS_BETTER


@dataclass(frozen=True)
class MetricComparison:
    """One metric, challenger against champion, with the verdict of its gate (if any)."""

    metric: str
    challenger: float
    champion: float | None
    higher_is_better: bool
    gated: bool
    failures: tuple[str, ...] = ()

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

    def to_markdown(self, title: str, run_link: str | None = None) -> str:
        """A Markdown report: verdict, table of metrics, reasons, link to the MLflow run."""
        verdict = "✅ **passed**" if self.passed else "❌ **failed**"
        champion = f"champion v{self.champion_version}" if self.champion_version else "no champion"
        lines = [f"### {title}", "", f"Gate {verdict} (against {champion}).", ""]
        if self.note:
            lines += [f"_{self.note}_", ""]
        lines += [
            "| metric | challenger | champion | improvement | gate |",
            "|---|---:|---:|---:|---|",
        ]
        for row in self.rows:
            champ = "—" if row.champion is None else f"{row.champion:.4f}"
            improvement = "—" if row.improvement is None else f"{row.improvement:+.4f}"
            status = "not gated" if not row.gated else "pass" if row.passed else "**fail**"
            lines.append(
                f"| {row.metric} | {row.challenger:.4f} | {champ} | {improvement} | {status} |"
            )
        if self.failures:
            lines += ["", "Reasons:", *[f"- {failure}" for failure in self.failures]]
        if run_link:
            lines += ["", f"MLflow run: {run_link}"]
        return "\n".join(lines)


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
            )
        )
    missing = sorted(set(config.metrics) - set(challenger))
    if missing:
        raise ValueError(f"gated metrics {missing} were not computed for the challenger")
    passed = all(row.passed for row in rows)
    return GateResult(passed, champion_version, tuple(rows), note)


def _check(metric: str, value: float, champion: float | None, gate: MetricGate) -> tuple[str, ...]:
    higher = HIGHER_IS_BETTER.get(metric, True)
    failures = []
    if gate.threshold is not None:
        ok = value >= gate.threshold if higher else value <= gate.threshold
        if not ok:
            bound = "at least" if higher else "at most"
            failures.append(f"{metric} {value:.4f} must be {bound} {gate.threshold:g}")
    if champion is None:
        return tuple(failures)
    improvement = (value - champion) if higher else (champion - value)
    if gate.min_delta is not None and improvement < gate.min_delta:
        failures.append(
            f"{metric} improves on the champion by {improvement:+.4f}; "
            f"the gate needs at least {gate.min_delta:+g}"
        )
    if gate.min_relative_delta is not None:
        relative = improvement / abs(champion) if champion else float("inf")
        if relative < gate.min_relative_delta:
            failures.append(
                f"{metric} improves on the champion by {relative:+.2%}; "
                f"the gate needs at least {gate.min_relative_delta:+.2%}"
            )
    return tuple(failures)
