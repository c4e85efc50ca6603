r"""The cloud side of the delivery benchmark, in a process of its own.

    python -m bench.delivery.orchestrator RESULT.json --broker-port P --store-root DIR \
        --package-id ID --package-version V --devices-file FILE --records-url URL

Does what the deliver-package flow's rollout task does, without Prefect: opens the delivery
records, rolls the stored package out to the devices over an `MqttChannel` with a
`FleetRollout`, closes everything and exits. Run once with all devices, it is the fleet
rollout; run once per device, it is one device per pipeline run. Its own process, so
that its peak RSS (`VmHWM`, read from /proc at the end) counts neither the agents nor the
broker. Writes the result as JSON; exits 0 when every device reported Success.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import resource
import sys
import time
from pathlib import Path
from typing import Any

from modelferry.delivery.channels.mqtt.channel import MqttBroker, MqttChannel
from modelferry.delivery.fleet import roll_out
from modelferry.delivery.plan import DeliveryPlan, FleetPolicy, require_package
from modelferry.delivery.records.store import DeliveryRecords
from modelferry.stores.local import LocalPackageStore

PROJECT_ID = "bench-delivery"


def peak_rss_kib() -> int:
    """This process's peak resident set size (`VmHWM`), in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    # Not Linux: getrusage gives the same peak (KiB on Linux, bytes on macOS).
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def cpu_seconds() -> float:
    """User and system CPU time of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def deliver(args: argparse.Namespace) -> dict[str, Any]:
    """Roll the package out as the options say; what happened, as a JSON object."""
    devices = [line.strip() for line in args.devices_file.read_text().splitlines() if line.strip()]
    store = LocalPackageStore(args.store_root)
    package = require_package(store, args.package_id, args.package_version)
    plan = DeliveryPlan(
        package=package,
        devices=tuple(devices),
        project_id=PROJECT_ID,
        model_name=args.package_id,
        model_version=args.package_version,
    )
    policy = FleetPolicy(
        max_parallel=args.max_parallel,
        canary_share=args.canary_share,
        inactivity_timeout=args.inactivity_timeout,
    )
    channel = MqttChannel(MqttBroker(args.broker_host, args.broker_port), client_id=args.client_id)
    started = time.monotonic()
    records = await asyncio.to_thread(DeliveryRecords, args.records_url)
    try:
        result = await roll_out(
            plan, channel, store, records=records, policy=policy, rollout_id=args.rollout_id
        )
    finally:
        records.close()
    return {
        "rollout_id": result.rollout_id,
        "devices": len(devices),
        "counts": dict(result.counts),
        "ok": result.ok,
        "failures": [
            {"device": row.device_id, "state": row.state, "error": row.error}
            for row in result.rows
            if row.failed
        ][:20],
        "rollout_s": time.monotonic() - started,
    }


def main(argv: list[str] | None = None) -> int:
    """Command line; see the module docstring."""
    started = time.monotonic()
    parser = argparse.ArgumentParser(prog="python -m bench.delivery.orchestrator")
    parser.add_argument("result", type=Path, help="where to write the result (JSON)")
    parser.add_argument("--broker-host", default="127.0.0.1")
    parser.add_argument("--broker-port", type=int, required=True)
    parser.add_argument("--client-id", default="bench-cloud")
    parser.add_argument("--store-root", type=Path, required=True)
    parser.add_argument("--package-id", required=True)
    parser.add_argument("--package-version", required=True)
    parser.add_argument("--devices-file", type=Path, required=True)
    parser.add_argument("--records-url", required=True)
    parser.add_argument("--rollout-id", default=None)
    parser.add_argument("--max-parallel", type=int, default=FleetPolicy().max_parallel)
    parser.add_argument("--canary-share", type=float, default=FleetPolicy().canary_share)
    parser.add_argument("--inactivity-timeout", type=float, default=120.0)
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    outcome = asyncio.run(deliver(args))
    outcome["process_s"] = time.monotonic() - started
    outcome["cpu_s"] = cpu_seconds()
    outcome["peak_rss_kib"] = peak_rss_kib()
    args.result.write_text(json.dumps(outcome, indent=2))
    return 0 if outcome["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
