"""The batch benchmark's report: contenders side by side, targets, every run."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from bench.common.report import (
    Target,
    join_sections,
    machine_section,
    notes_section,
    targets_section,
)

# The targets this benchmark checks.
TARGET_VS_BOOSTER = 0.8
TARGET_PEAK_RSS_MB = 1500.0
TARGET_VS_MLFLOW = 10.0


@dataclass(frozen=True)
class BatchRun:
    """What one contender used to score one input, in one round.

    `score_s` is the wall time of the scoring inside the process: reading, predicting and
    (all but the anchor) writing the predictions, after Python started, imported and
    loaded the model. `process_s` is the whole process.
    """

    contender: str
    round: int
    rows: int
    score_s: float
    process_s: float
    cpu_s: float
    peak_rss_mb: float
    others_cpu_percent: float
    read_s: float | None = None
    predict_s: float | None = None

    @property
    def rows_per_s(self) -> float:
        """Rows scored per second of scoring."""
        return self.rows / self.score_s


@dataclass(frozen=True)
class Contender:
    """One way of scoring an input, as labelled in the report."""

    key: str
    label: str
    input_label: str


def _runs(results: Sequence[BatchRun], contender: str) -> list[BatchRun]:
    return sorted((r for r in results if r.contender == contender), key=lambda r: r.round)


def _median(runs: Sequence[BatchRun], pick: Callable[[BatchRun], float]) -> float:
    return statistics.median(pick(r) for r in runs)


def _ratio(
    results: Sequence[BatchRun],
    name: str,
    top: str,
    bottom: str,
    pick: Callable[[BatchRun], float],
    goal: float | None,
) -> Target | None:
    """pick(top) / pick(bottom): the geometric mean of the rounds, and their range.

    The two run back to back, in an order swapped every round: over an even number of
    rounds, whatever the first (or second) of a pair gains cancels out in this mean.
    """
    above, below = _runs(results, top), _runs(results, bottom)
    if not above or not below:
        return None
    per_round = [pick(a) / pick(b) for a, b in zip(above, below, strict=True)]
    value = statistics.geometric_mean(per_round)
    if goal is None:
        return Target(name, value, min(per_round), max(per_round), "(information)", None)
    return Target(name, value, min(per_round), max(per_round), f">= {goal:g}x", value >= goal)


def batch_targets(results: Sequence[BatchRun]) -> list[Target]:
    """The targets, from the rounds' ratios, then figures for information."""
    found = [
        _ratio(results, "(b)/(a) rows/s, Parquet", "modelferry", "booster",
               lambda r: r.rows_per_s, TARGET_VS_BOOSTER),
    ]  # fmt: skip
    peaks = [r.peak_rss_mb for r in _runs(results, "modelferry")]
    if peaks:
        found.append(
            Target(
                "(b) peak RSS MB, Parquet (the highest round)",
                max(peaks),
                min(peaks),
                max(peaks),
                f"<= {TARGET_PEAK_RSS_MB:,.0f} MB",
                max(peaks) <= TARGET_PEAK_RSS_MB,
            )
        )
    found += [
        _ratio(results, "(b) Parquet rows/s / (c) mlflow models predict rows/s, scoring",
               "modelferry", "mlflow", lambda r: r.rows_per_s, TARGET_VS_MLFLOW),
        _ratio(results, "(b) Parquet / (c) mlflow, rows per second of the whole process",
               "modelferry", "mlflow", lambda r: r.rows / r.process_s, None),
        _ratio(results, "(d)/(c) rows/s, same CSV, scoring", "modelferry_csv", "mlflow",
               lambda r: r.rows_per_s, None),
        _ratio(results, "(d)/(c) rows per second of the whole process, same CSV",
               "modelferry_csv", "mlflow", lambda r: r.rows / r.process_s, None),
        _ratio(results, "(b)/(a) rows per second of the whole process", "modelferry",
               "booster", lambda r: r.rows / r.process_s, None),
        _ratio(results, "(b) rows/s / (a)'s Booster.predict alone (no read)", "modelferry",
               "booster", lambda r: r.rows / (r.predict_s or r.score_s), None),
        _ratio(results, "(a)/(b) CPU seconds, Parquet", "booster", "modelferry",
               lambda r: r.cpu_s, None),
        _ratio(results, "(a)/(b) peak RSS, Parquet", "booster", "modelferry",
               lambda r: r.peak_rss_mb, None),
        _ratio(results, "(c)/(d) CPU seconds, same CSV", "mlflow", "modelferry_csv",
               lambda r: r.cpu_s, None),
        _ratio(results, "(c)/(d) peak RSS, same CSV", "mlflow", "modelferry_csv",
               lambda r: r.peak_rss_mb, None),
    ]  # fmt: skip
    return [t for t in found if t is not None]


def _breakdown(runs: Sequence[BatchRun]) -> str:
    reads = [r.read_s for r in runs if r.read_s is not None]
    predicts = [r.predict_s for r in runs if r.predict_s is not None]
    if not reads or not predicts:
        return ""
    return f"read {statistics.median(reads):.1f} + predict {statistics.median(predicts):.1f}"


def batch_report(
    info: Mapping[str, str],
    results: Sequence[BatchRun],
    contenders: Sequence[Contender],
    notes: Sequence[str],
) -> str:
    """The Markdown report: machine, medians side by side, targets, every run, notes."""
    medians = ["## Results (median over rounds)", ""]
    medians.append(
        "| input | contender | rows | scoring s | rows/s | process s | CPU s | peak RSS MB "
        "| others' CPU % |"
    )
    medians.append("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for contender in contenders:
        runs = _runs(results, contender.key)
        if not runs:
            continue
        detail = _breakdown(runs)
        scoring = f"{_median(runs, lambda r: r.score_s):,.1f}" + (f" ({detail})" if detail else "")
        medians.append(
            f"| {contender.input_label} | {contender.label} | {runs[0].rows:,} | {scoring} "
            f"| {_median(runs, lambda r: r.rows_per_s):,.0f} "
            f"| {_median(runs, lambda r: r.process_s):,.1f} "
            f"| {_median(runs, lambda r: r.cpu_s):,.1f} "
            f"| {_median(runs, lambda r: r.peak_rss_mb):,.0f} "
            f"| {_median(runs, lambda r: r.others_cpu_percent):.0f} |"
        )
    every = ["## Every run", ""]
    every.append(
        "| round | contender | scoring s | rows/s | process s | CPU s | peak RSS MB "
        "| others' CPU % |"
    )
    every.append("|---:|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        every.append(
            f"| {r.round} | {r.contender} | {r.score_s:,.1f} | {r.rows_per_s:,.0f} "
            f"| {r.process_s:,.1f} | {r.cpu_s:,.1f} | {r.peak_rss_mb:,.0f} "
            f"| {r.others_cpu_percent:.0f} |"
        )
    return join_sections(
        machine_section(info),
        medians,
        targets_section(batch_targets(results)),
        every,
        notes_section(notes),
    )
