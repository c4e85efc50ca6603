"""The online benchmark's report: medians per scenario and server, targets, every run."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping, Sequence

from bench.common.report import (
    Target,
    join_sections,
    machine_section,
    notes_section,
    targets_section,
)
from bench.serving.load import SCENARIOS, WrkResult

# The targets this benchmark checks.
TARGET_ONE_ROW_VS_MLFLOW = 30.0
TARGET_P99_MS = 5.0
TARGET_VS_FLOOR = 0.8
TARGET_BATCH_VS_MLFLOW = 4.0


def _median(results: Sequence[WrkResult], pick: Callable[[WrkResult], float]) -> float:
    return statistics.median(pick(r) for r in results)


def serving_targets(results: list[WrkResult]) -> list[Target]:
    """The targets, from medians over rounds (with the per-round range)."""

    def runs(server: str, scenario: str) -> list[WrkResult]:
        return sorted(
            (r for r in results if r.server == server and r.scenario == scenario),
            key=lambda r: r.round,
        )

    def ratio(name: str, num: str, den: str, scenario: str, target: float) -> Target | None:
        top, bottom = runs(num, scenario), runs(den, scenario)
        if not top or not bottom:
            return None
        per_round = [a.requests_per_s / b.requests_per_s for a, b in zip(top, bottom, strict=True)]
        value = _median(top, lambda r: r.requests_per_s) / _median(
            bottom, lambda r: r.requests_per_s
        )
        return Target(
            name, value, min(per_round), max(per_round), f">= {target:g}x", value >= target
        )

    def cpu_ratio(name: str, num: str, den: str, scenario: str) -> Target | None:
        # Server CPU per request: how much work each answer costs, whatever else runs.
        top, bottom = runs(num, scenario), runs(den, scenario)
        if not top or not bottom:
            return None
        per_round = [
            b.server_cpu_us_per_request / a.server_cpu_us_per_request
            for a, b in zip(top, bottom, strict=True)
        ]
        value = _median(bottom, lambda r: r.server_cpu_us_per_request) / _median(
            top, lambda r: r.server_cpu_us_per_request
        )
        return Target(name, value, min(per_round), max(per_round), "(information)", None)

    p99 = [r.p99_ms for r in runs("modelferry", "one_row_c8")] or [float("nan")]
    found = [
        ratio("(c)/(a) req/s, 1 row, 8 conn", "modelferry", "mlflow", "one_row_c8",
              TARGET_ONE_ROW_VS_MLFLOW),
        Target("(c) p99 ms, 1 row, 8 conn", statistics.median(p99), min(p99), max(p99),
               f"<= {TARGET_P99_MS:g} ms", statistics.median(p99) <= TARGET_P99_MS),
        ratio("(c)/(b) req/s, 1 row, 8 conn", "modelferry", "floor", "one_row_c8",
              TARGET_VS_FLOOR),
        ratio("(c)/(a) req/s, 1,000 rows, 4 conn", "modelferry", "mlflow", "rows_1000_c4",
              TARGET_BATCH_VS_MLFLOW),
        cpu_ratio("(b)/(c) server CPU per request, 1 row, 8 conn", "modelferry", "floor",
                  "one_row_c8"),
        cpu_ratio("(a)/(c) server CPU per request, 1 row, 8 conn", "modelferry", "mlflow",
                  "one_row_c8"),
        cpu_ratio("(a)/(c) server CPU per request, 1,000 rows", "modelferry", "mlflow",
                  "rows_1000_c4"),
    ]  # fmt: skip
    return [r for r in found if r is not None]


def serving_report(
    info: Mapping[str, str],
    results: list[WrkResult],
    servers: Mapping[str, str],
    notes: Sequence[str],
) -> str:
    """The Markdown report: machine, table of medians, targets, every run, notes."""
    medians = ["## Results (median over rounds)", ""]
    medians.append(
        "| scenario | server | req/s | p50 ms | p99 ms | server CPU µs/req | others' CPU % |"
    )
    medians.append("|---|---|---:|---:|---:|---:|---:|")
    for scenario in SCENARIOS:
        for key, label in servers.items():
            runs = [r for r in results if r.scenario == scenario.key and r.server == key]
            if not runs:
                continue
            errors = sum(r.non_2xx + r.socket_errors for r in runs)
            flag = f" ({errors} errors)" if errors else ""
            medians.append(
                f"| {scenario.label} | {label}{flag} "
                f"| {_median(runs, lambda r: r.requests_per_s):,.0f} "
                f"| {_median(runs, lambda r: r.p50_ms):.2f} "
                f"| {_median(runs, lambda r: r.p99_ms):.2f} "
                f"| {_median(runs, lambda r: r.server_cpu_us_per_request):,.0f} "
                f"| {_median(runs, lambda r: r.others_cpu_percent):.0f} |"
            )
    every = ["## Every run", ""]
    every.append("| round | scenario | server | req/s | p99 ms | server CPU % | others' CPU % |")
    every.append("|---:|---|---|---:|---:|---:|---:|")
    for r in results:
        every.append(
            f"| {r.round} | {r.scenario} | {r.server} | {r.requests_per_s:,.0f} "
            f"| {r.p99_ms:.2f} | {r.server_cpu_percent:.0f} | {r.others_cpu_percent:.0f} |"
        )
    return join_sections(
        machine_section(info),
        medians,
        targets_section(serving_targets(results)),
        every,
        notes_section(notes),
    )
