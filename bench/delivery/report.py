"""The delivery benchmark's report: machine, table, ratio, targets (Markdown)."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.common.report import join_sections, machine_section

#: The issue's targets for the fleet rollout.
TARGET_SPAN_S = 60.0
TARGET_PEAK_RSS_MB = 500.0


def _mb(kib: float) -> float:
    """KiB as MB (10^6 bytes), the unit of the target."""
    return kib * 1024 / 1e6


@dataclass(frozen=True)
class FleetRun:
    """The one rollout to every device."""

    devices: int
    result: Mapping[str, Any]
    wall_s: float
    """The orchestrator process, from its start to its exit."""
    span_s: float
    """From the first newDelivery to the last terminal state (from the records)."""
    installed: int
    """Devices the records list as having the package installed."""
    on_disk: int
    """Devices whose `current` link points at the package."""
    cpu: Mapping[str, float] = field(default_factory=dict)

    @property
    def successes(self) -> int:
        """Devices that reported Success."""
        return int(self.result["counts"].get("Success", 0))

    @property
    def ok(self) -> bool:
        """Every device reported Success and has the package installed."""
        return self.successes == self.installed == self.on_disk == self.devices

    @property
    def peak_rss_mb(self) -> float:
        """The orchestrator's peak RSS, MB."""
        return _mb(self.result["peak_rss_kib"])


@dataclass(frozen=True)
class SoloRuns:
    """One orchestrator process per device, a few devices, extrapolated to the fleet."""

    devices: int
    extrapolate_to: int
    results: Sequence[Mapping[str, Any]]
    walls_s: Sequence[float]
    spans_s: Sequence[float]
    installed: int
    on_disk: int

    @property
    def ok(self) -> bool:
        """Every run's device reported Success and has the package installed."""
        succeeded = sum(1 for result in self.results if result["ok"])
        return succeeded == self.installed == self.on_disk == self.devices

    @property
    def mean_wall_s(self) -> float:
        """Mean seconds per run (process start to exit)."""
        return statistics.fmean(self.walls_s)

    @property
    def mean_span_s(self) -> float:
        """Mean seconds from newDelivery to the terminal state, per run."""
        return statistics.fmean(self.spans_s)

    @property
    def total_wall_s(self) -> float:
        """The mean run times the fleet's device count."""
        return self.mean_wall_s * self.extrapolate_to

    @property
    def peak_rss_mb(self) -> float:
        """The largest peak RSS of any run, MB."""
        return max(_mb(result["peak_rss_kib"]) for result in self.results)

    @property
    def mean_cpu_s(self) -> float:
        """Mean CPU seconds per run."""
        return statistics.fmean(float(result["cpu_s"]) for result in self.results)


def render_report(
    *,
    machine: Mapping[str, str],
    loads: Mapping[str, str],
    args: Mapping[str, Any],
    package_bytes: int,
    agent_processes: int,
    connect_s: float,
    fleet: FleetRun,
    solo: SoloRuns,
    dropped: Sequence[str],
) -> tuple[str, dict[str, Any]]:
    """The Markdown report, and the same numbers as a JSON-ready dict."""
    n = fleet.devices
    cores = int(machine["nproc"])
    ratio_wall = solo.total_wall_s / fleet.wall_s
    ratio_span = solo.mean_span_s * n / fleet.span_s
    span_met = fleet.span_s <= TARGET_SPAN_S
    rss_met = fleet.peak_rss_mb <= TARGET_PEAK_RSS_MB
    set_up = [
        "## Set-up",
        "",
        f"- command: `python -m bench.delivery {_options(args)}`",
        "- load average (1/5/15 min): "
        + "; ".join(f"{moment} {value}" for moment, value in loads.items()),
        f"- package: {package_bytes:,} bytes, a signed LightGBM package padded with random "
        "bytes; devices get `file://` links from a `LocalPackageStore`",
        f"- devices: {n + solo.devices} agents in {agent_processes} `modelferry agent` "
        f"process(es), all connected after {connect_s:.1f} s. An agent process smoke-tests "
        "a package once (cached by manifest digest), so the fleet run made one smoke "
        "prediction per process, "
        + (
            "under an interpreter without MLflow (a device installs only the package's "
            "requirements)"
            if args.get("smoke_python") is None
            else f"under `{args['smoke_python']}`"
        ),
        f"- one device per pipeline run: for each of {solo.devices} further devices, a fresh "
        "Python process opens its own delivery records, MQTT channel and dispatcher, "
        "delivers to that one device with a `FleetRollout` and exits, as the "
        "deliver-package flow's task would in a run of its own, but without Prefect's own "
        f"start-up (so the ratio is a lower bound). The mean run is extrapolated to {n} "
        "devices. Their agents had smoke-tested the package in the fleet run already, so "
        "these runs paid no smoke prediction.",
    ]
    results = [
        "## Results",
        "",
        "| run | devices | wall s | first newDelivery → last terminal s | devices/s "
        "| orchestrator peak RSS MB | orchestrator CPU s |",
        "|---|---:|---:|---:|---:|---:|---:|",
        f"| fleet: one rollout, one orchestrator process | {n} | {fleet.wall_s:.1f} "
        f"| {fleet.span_s:.1f} | {n / fleet.wall_s:.1f} | {fleet.peak_rss_mb:.0f} "
        f"| {fleet.result['cpu_s']:.1f} |",
        f"| one device per pipeline run: {solo.devices} runs, extrapolated to {n} | {n} "
        f"| {solo.total_wall_s:.0f} | {solo.mean_span_s * n:.0f} | {1 / solo.mean_wall_s:.2f} "
        f"| {solo.peak_rss_mb:.0f} (each run) | {solo.mean_cpu_s * n:.0f} |",
        "",
        f"**The fleet rollout is {ratio_wall:.1f}x faster than one device per pipeline run** "
        f"({solo.total_wall_s:.0f} s / {fleet.wall_s:.1f} s, whole runs); "
        f"{ratio_span:.1f}x counting only newDelivery → terminal state. One device per run "
        f"took {solo.mean_wall_s:.2f} s on average (min {min(solo.walls_s):.2f}, max "
        f"{max(solo.walls_s):.2f}), of which {solo.mean_span_s:.2f} s from newDelivery to "
        "Success; the rest is the process start, imports, opening the records and the "
        "channel.",
        "",
        _cpu_line(fleet, cores),
    ]
    targets = [
        "## Targets",
        "",
        "| target | measured | goal | |",
        "|---|---:|---|---|",
        f"| fleet: first newDelivery → last terminal state | {fleet.span_s:.1f} s "
        f"| ≤ {TARGET_SPAN_S:g} s | {_verdict(span_met)} |",
        f"| fleet: orchestrator peak RSS | {fleet.peak_rss_mb:.0f} MB "
        f"| ≤ {TARGET_PEAK_RSS_MB:g} MB | {_verdict(rss_met)} |",
        "| fleet: devices with Success / installed in the records / installed on disk "
        f"| {fleet.successes} / {fleet.installed} / {fleet.on_disk} of {n} | all "
        f"| {_verdict(fleet.ok)} |",
        f"| one device per run: installed in the records / on disk "
        f"| {solo.installed} / {solo.on_disk} of {solo.devices} | all | {_verdict(solo.ok)} |",
        f"| fleet over one device per run, whole runs | {ratio_wall:.1f}x | (information) | |",
    ]
    notes = [
        f"- {failure['device']}: {failure['state']}: {failure['error']}"
        for failure in fleet.result.get("failures", [])
    ]
    notes += [f"- the broker logged: {line}" for line in dropped[:20]]
    report = join_sections(
        machine_section(machine),
        set_up,
        results,
        targets,
        ["## Failures", "", *notes] if notes else [],
    )
    data = {
        "machine": dict(machine),
        "loads": dict(loads),
        "args": dict(args),
        "package_bytes": package_bytes,
        "connect_s": connect_s,
        "fleet": {
            "devices": n,
            "wall_s": fleet.wall_s,
            "span_s": fleet.span_s,
            "installed": fleet.installed,
            "on_disk": fleet.on_disk,
            "cpu": dict(fleet.cpu),
            "result": dict(fleet.result),
        },
        "solo": {
            "devices": solo.devices,
            "walls_s": list(solo.walls_s),
            "spans_s": list(solo.spans_s),
            "results": [dict(result) for result in solo.results],
        },
        "ratio_wall": ratio_wall,
        "ratio_span": ratio_span,
        "targets": {"span": span_met, "peak_rss": rss_met, "all_installed": fleet.ok},
    }
    return report, data


def _verdict(met: bool) -> str:
    return "met" if met else "**missed**"


def _cpu_line(fleet: FleetRun, cores: int) -> str:
    cpu = fleet.cpu
    orchestrator = float(fleet.result["cpu_s"])
    agents, broker = cpu.get("agents", 0.0), cpu.get("broker", 0.0)
    own = orchestrator + agents + broker
    others = max(cpu.get("machine", own) - own, 0.0)
    return (
        f"CPU during the fleet run ({fleet.wall_s:.1f} s x {cores} cores = "
        f"{fleet.wall_s * cores:.0f} core-seconds): orchestrator {orchestrator:.1f} s, agents "
        f"{agents:.1f} s (with their smoke predictions), broker {broker:.1f} s; the rest of "
        f"the machine {others:.1f} s ({others / (fleet.wall_s * cores):.0%} of it). The "
        f"benchmark's own {own:.0f} CPU-seconds would take at least {own / cores:.0f} s on "
        f"{cores} otherwise idle cores."
    )


def _options(args: Mapping[str, Any]) -> str:
    parts = []
    for name in ("devices", "agent_processes", "package_mb", "sequential_devices"):
        parts.append(f"--{name.replace('_', '-')} {args[name]:g}")
    for name in ("max_parallel", "canary_share"):
        if args.get(name) is not None:
            parts.append(f"--{name.replace('_', '-')} {args[name]:g}")
    if args.get("smoke_python") is not None:
        parts.append(f"--smoke-python {args['smoke_python']}")
    return " ".join(parts)
