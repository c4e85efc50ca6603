"""Edge delivery benchmark: one 10 MB package to 1,000 devices over Mosquitto on loopback.

    python -m bench.delivery [--devices 1000] [--agent-processes 4] [--package-mb 10]
                             [--sequential-devices 20] [--keep]

1. Builds a real signed LightGBM package padded to `--package-mb` MiB and puts it in a
   `LocalPackageStore` (devices get `file://` links).
2. Starts a private Mosquitto (raised queue and in-flight bounds, see
   `modelferry.testing.mosquitto`) and `--agent-processes` `modelferry agent` processes
   simulating the devices; waits until every agent has connected.
3. **Fleet:** one orchestrator process rolls the package out to all `--devices` devices
   with a `FleetRollout` (the deliver-package flow's defaults: 50 at a time, a 10 % canary
   ring) and exits. Every device must report Success, i.e. it downloaded, verified the
   signature and every file's checksum, smoke-tested and installed the package, and the
   records must list it as installed.
4. **One device per pipeline run** (how the reference design runs): for each of
   `--sequential-devices` further devices, a fresh orchestrator process opens its own
   records, channel and dispatcher, delivers to that one device and exits. The mean per
   run is extrapolated to `--devices`.
5. Prints the machine, the table, the ratio and whether the targets are met.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common.lifecycle import interrupt_on_termination, log, work_dir
from bench.common.machine import load_average, machine_info
from bench.common.processes import REPO
from bench.delivery.agents import AgentProcesses, device_python, split_devices
from bench.delivery.cpu import CpuMeter
from bench.delivery.package import PACKAGE_ID, build_bench_package
from bench.delivery.report import FleetRun, SoloRuns, render_report
from modelferry.testing.mosquitto import MANY_CLIENTS_CONFIG, Mosquitto, mosquitto_version

VERSION = "1"
CONNECT_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class OrchestratorRun:
    """One orchestrator process: what it wrote, and its wall time seen from outside."""

    result: dict[str, Any]
    wall_s: float


def run_orchestrator(
    work: Path,
    name: str,
    devices: Sequence[str],
    broker: Mosquitto,
    *,
    client_id: str,
    records_url: str,
    extra: Sequence[str] = (),
) -> OrchestratorRun:
    """Start `bench.delivery.orchestrator` for `devices`, wait for it, read its result."""
    folder = work / "orchestrator"
    folder.mkdir(parents=True, exist_ok=True)
    ids = folder / f"{name}.devices"
    ids.write_text("".join(f"{device}\n" for device in devices))
    result = folder / f"{name}.json"
    command = [
        sys.executable,
        "-m",
        "bench.delivery.orchestrator",
        str(result),
        "--broker-port",
        str(broker.port),
        "--client-id",
        client_id,
        "--store-root",
        str(work / "store"),
        "--package-id",
        PACKAGE_ID,
        "--package-version",
        VERSION,
        "--devices-file",
        str(ids),
        "--records-url",
        records_url,
        "--rollout-id",
        name,
        *extra,
    ]
    started = time.monotonic()
    with (folder / f"{name}.log").open("ab") as output:
        completed = subprocess.run(command, cwd=REPO, stdout=output, stderr=subprocess.STDOUT)
    wall = time.monotonic() - started
    if not result.exists():
        raise RuntimeError(
            f"orchestrator {name} exited {completed.returncode} without a result; "
            f"see {folder / f'{name}.log'}"
        )
    return OrchestratorRun(json.loads(result.read_text()), wall)


def records_span(records_url: str, rollout_id: str) -> tuple[float, list[str]]:
    """How long a rollout took and which devices installed the package.

    The time is in seconds, from the first delivery's newDelivery to the last terminal
    state; the devices are those the records list as having the package installed.
    """
    from modelferry.delivery.records.store import DeliveryRecords

    records = DeliveryRecords(records_url)
    try:
        rows = records.rollout(rollout_id)
        installed = [
            entry.device_id
            for entry in records.installed()
            if (entry.package_id, entry.package_version) == (PACKAGE_ID, VERSION)
        ]
    finally:
        records.close()
    first = min(row.created_at for row in rows)
    ended = [row.ended_at for row in rows if row.ended_at is not None]
    last = max(ended) if ended else first
    return (last - first).total_seconds(), installed


def installed_on_disk(agents: AgentProcesses, devices: Sequence[str]) -> int:
    """Devices whose `current` link points at the delivered version."""
    expected = f"versions/{PACKAGE_ID}/{VERSION}"
    count = 0
    for device in devices:
        current = agents.device_root(device) / "current"
        if current.is_symlink() and current.readlink().as_posix() == expected:
            count += 1
    return count


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.delivery",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--agent-processes", type=int, default=4)
    parser.add_argument("--package-mb", type=float, default=10.0, help="package size in MiB")
    parser.add_argument(
        "--sequential-devices",
        type=int,
        default=20,
        help="devices measured one per orchestrator process; extrapolated to --devices",
    )
    parser.add_argument("--max-parallel", type=int, default=None, help="default: the policy's")
    parser.add_argument("--canary-share", type=float, default=None, help="default: the policy's")
    parser.add_argument(
        "--smoke-python",
        type=Path,
        default=None,
        help="interpreter of the devices' smoke prediction; default: this one, MLflow hidden",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--keep", action="store_true", help="keep the work dir")
    args = parser.parse_args(argv)
    if args.devices < 1 or args.agent_processes < 1 or args.sequential_devices < 1:
        parser.error("--devices, --agent-processes and --sequential-devices must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; 0 when every device got the package (targets met or not)."""
    args = parse_args(argv)
    interrupt_on_termination()
    with contextlib.ExitStack() as stack:
        work = work_dir(stack, "modelferry-delivery-bench-", args.keep)
        log(f"work dir: {work}" + (" (kept)" if args.keep else ""))
        try:
            return _run(args, work, stack)
        except KeyboardInterrupt:
            log("interrupted")
            return 130


def _run(args: argparse.Namespace, work: Path, stack: contextlib.ExitStack) -> int:
    info = machine_info(
        ["paho-mqtt", "sqlalchemy", "pydantic", "lightgbm"], {"mosquitto": mosquitto_version()}
    )
    loads = {"start": load_average()}
    fleet_ids = [f"edge-{number:04d}" for number in range(args.devices)]
    solo_ids = [f"solo-{number:04d}" for number in range(args.sequential_devices)]
    # The one-per-run devices are extra agents, dealt over the same processes.
    fleet_groups = split_devices(fleet_ids, args.agent_processes)
    solo_groups = split_devices(solo_ids, len(fleet_groups))
    groups = [
        fleet + (solo_groups[number] if number < len(solo_groups) else [])
        for number, fleet in enumerate(fleet_groups)
    ]

    log(f"building a {args.package_mb:g} MiB package")
    package = build_bench_package(work / "build", args.package_mb, VERSION)
    from modelferry.stores.local import LocalPackageStore

    LocalPackageStore(work / "store").put(
        package.built.path, package_id=PACKAGE_ID, version=VERSION
    )
    # Raised per-client bounds and open-file limit: the cloud channel is one client that
    # receives every device's events, and each device holds a descriptor.
    broker = Mosquitto(
        work / "broker",
        extra_config=MANY_CLIENTS_CONFIG,
        raise_file_limit=True,
        new_session=True,
    )
    stack.callback(broker.stop)
    broker.start()
    smoke_python = device_python(work / "device-env")
    if args.smoke_python is not None:
        # Absolute: the smoke prediction runs in a folder of its own.
        smoke_python = args.smoke_python.absolute()
    agents = AgentProcesses(work / "agents", groups, broker, package.public_key, smoke_python)
    stack.callback(agents.stop)
    log(f"starting {len(groups)} agent process(es) for {len(fleet_ids) + len(solo_ids)} devices")
    connect_s = agents.start(CONNECT_TIMEOUT_S)

    log(f"all agents connected in {connect_s:.1f} s; rolling out to {len(fleet_ids)} devices")
    loads["fleet start"] = load_average()
    fleet = _fleet(args, work, broker, agents, fleet_ids)
    loads["fleet end"] = load_average()
    log(f"fleet: {fleet.result['counts']} in {fleet.wall_s:.1f} s; now one device per run")
    solo = _solo(work, broker, agents, solo_ids, len(fleet_ids))
    loads["end"] = load_average()

    report, data = render_report(
        machine=info,
        loads=loads,
        args=vars(args),
        package_bytes=package.built.size,
        agent_processes=len(groups),
        connect_s=connect_s,
        fleet=fleet,
        solo=solo,
        dropped=broker.dropped_messages(),
    )
    print(report)
    if args.json is not None:
        args.json.write_text(json.dumps(data, indent=2, default=str))
    return 0 if fleet.ok and solo.ok else 1


def _fleet(
    args: argparse.Namespace,
    work: Path,
    broker: Mosquitto,
    agents: AgentProcesses,
    devices: Sequence[str],
) -> FleetRun:
    policy: list[str] = []
    if args.max_parallel is not None:
        policy += ["--max-parallel", str(args.max_parallel)]
    if args.canary_share is not None:
        policy += ["--canary-share", str(args.canary_share)]
    assert broker.pid is not None
    meter = CpuMeter({"agents": agents.pids, "broker": [broker.pid]})
    url = f"sqlite:///{work / 'fleet.db'}"
    meter.start()
    run = run_orchestrator(
        work, "fleet", devices, broker, client_id="bench-fleet", records_url=url, extra=policy
    )
    cpu = meter.stop()
    span, installed = records_span(url, "fleet")
    return FleetRun(
        devices=len(devices),
        result=run.result,
        wall_s=run.wall_s,
        span_s=span,
        installed=len(set(installed) & set(devices)),
        on_disk=installed_on_disk(agents, devices),
        cpu=cpu,
    )


def _solo(
    work: Path,
    broker: Mosquitto,
    agents: AgentProcesses,
    devices: Sequence[str],
    extrapolate_to: int,
) -> SoloRuns:
    url = f"sqlite:///{work / 'solo.db'}"
    runs: list[OrchestratorRun] = []
    spans: list[float] = []
    for device in devices:
        # The same client id every time, as one channel block used by every pipeline run.
        runs.append(
            run_orchestrator(
                work, device, [device], broker, client_id="bench-solo", records_url=url
            )
        )
        spans.append(records_span(url, device)[0])
    _, installed = records_span(url, devices[0])
    return SoloRuns(
        devices=len(devices),
        extrapolate_to=extrapolate_to,
        results=[run.result for run in runs],
        walls_s=[run.wall_s for run in runs],
        spans_s=spans,
        installed=len(set(installed) & set(devices)),
        on_disk=installed_on_disk(agents, devices),
    )


if __name__ == "__main__":
    sys.exit(main())
