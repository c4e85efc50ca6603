"""Fleet rollout: rings, abort, retries, the parallel bound, and 1,000 devices in one process."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic import ValidationError

from modelferry.delivery.channels.local import LocalChannel, LocalHub
from modelferry.delivery.fleet import FleetRollout, roll_out
from modelferry.delivery.outcomes import FleetResult
from modelferry.delivery.plan import DeliveryPlan, FleetPolicy, parse_device_ids, require_package
from modelferry.delivery.protocol.states import ERROR, SKIPPED, SUCCESS, TIMED_OUT
from modelferry.delivery.records.store import DeliveryRecords
from modelferry.errors import ChannelError, PackageStoreError
from tests.fake_devices import (
    ConcurrencyProbe,
    DeviceScript,
    FakeFleet,
    RecordingChannel,
    make_package,
)

#: Clocks that never run out in a test expecting answers; no waiting between retries.
QUICK = {"inactivity_timeout": 30.0, "deadline": 120.0, "retry_backoff": 0.0}


@dataclass
class Rollout:
    result: FleetResult
    channel: RecordingChannel
    records: DeliveryRecords
    fleet: FakeFleet
    delays: list[float]


def run_rollout(
    tmp_path: Path,
    devices: list[str],
    *,
    scripts: Mapping[str, DeviceScript] | None = None,
    probe: ConcurrencyProbe | None = None,
    channel_setup: dict[str, object] | None = None,
    **policy: object,
) -> Rollout:
    """Roll a package out to fake devices; scripts default to devices that succeed."""
    hub = LocalHub()
    store, package = make_package(tmp_path)
    channel = RecordingChannel(LocalChannel(hub))
    for name, value in (channel_setup or {}).items():
        setattr(channel, name, value)
    records = DeliveryRecords(f"sqlite:///{tmp_path / 'deliveries.db'}")
    fleet = FakeFleet(hub, devices, probe=probe)
    for device, script in (scripts or {}).items():
        fleet.add(device, script)
    plan = DeliveryPlan(
        package=package, devices=tuple(devices), project_id="prod-bc", model_name="bc",
        model_version="3",
    )  # fmt: skip
    delays: list[float] = []

    async def sleep(seconds: float) -> None:
        delays.append(seconds)

    async def run() -> FleetResult:
        async with fleet:
            rollout = FleetRollout(
                channel, store, records=records, policy=FleetPolicy(**{**QUICK, **policy}),
                rollout_id="r1", sleep=sleep,
            )  # fmt: skip
            return await rollout.run(plan)

    return Rollout(asyncio.run(run()), channel, records, fleet, delays)


def devices(count: int) -> list[str]:
    return [f"dev-{n:04d}" for n in range(count)]


def test_the_canary_ring_finishes_before_the_rest_start(tmp_path: Path) -> None:
    done = run_rollout(tmp_path, devices(20), canary_share=0.1, max_parallel=4)

    assert done.result.ok
    assert done.result.counts == {SUCCESS: 20}
    attempts = {r.device_id: r for r in done.records.rollout("r1")}
    canary = [attempts[d] for d in devices(2)]
    rest = [attempts[d] for d in devices(20)[2:]]
    assert all(r.state == SUCCESS for r in canary)
    last_canary_end = max(r.ended_at for r in canary if r.ended_at)
    assert all(r.created_at >= last_canary_end for r in rest)
    first_sends = [
        m.device_id for _, m in done.channel.sent if m.properties["kind"] == "newDelivery"
    ]
    assert set(first_sends[:2]) == set(devices(2))
    # Each row says its ring and when it ended, for the fleet chart.
    rows = {row.device_id: row for row in done.result.rows}
    assert {rows[d].ring for d in devices(2)} == {1}
    assert {rows[d].ring for d in devices(20)[2:]} == {2}
    started = done.result.started_at
    assert started is not None
    ends = [row.finished_at for row in done.result.rows]
    assert all(end is not None and end >= started for end in ends)
    assert (
        max(rows[d].finished_at for d in devices(2))
        <= min(  # type: ignore[type-var]
            rows[d].finished_at
            for d in devices(20)[2:]  # type: ignore[type-var]
        )
    )


def test_a_failing_canary_aborts_and_skips_the_rest(tmp_path: Path) -> None:
    scripts = {"dev-0001": DeviceScript(result="Error", error_reason="bad signature")}
    names = devices(20)

    done = run_rollout(tmp_path, names, scripts=scripts, canary_share=0.1)

    result = done.result
    assert result.aborted
    assert result.abort_reason == "1 of 2 canary device(s) failed (50%, more than the 20% allowed)"
    assert [(r.device_id, r.state) for r in result.rows[:2]] == [
        ("dev-0000", SUCCESS), ("dev-0001", ERROR),
    ]  # fmt: skip
    assert result.counts == {SUCCESS: 1, ERROR: 1, SKIPPED: 18}
    for row in result.rows[2:]:
        assert (row.state, row.attempts, row.ring) == (SKIPPED, 0, 2)
        assert row.finished_at is not None
        assert row.error == f"not started: rollout aborted ({result.abort_reason})"
        assert done.channel.sent_kinds(row.device_id) == []
        [record] = done.records.history(row.device_id)
        assert (record.state, record.error) == (SKIPPED, row.error)
    assert not result.ok
    assert "rollout aborted: 1 of 2 canary device(s) failed" in result.summary()


def test_the_rollout_stops_starting_devices_once_too_many_failed(tmp_path: Path) -> None:
    names = devices(10)
    scripts = {name: DeviceScript(result="Error") for name in names[:3]}

    done = run_rollout(
        tmp_path, names, scripts=scripts, canary_share=0, max_parallel=1, max_failure_share=0.2
    )

    result = done.result
    assert result.aborted
    assert result.abort_reason == "3 of 10 device(s) failed (30%, more than the 20% allowed)"
    assert [r.state for r in result.rows] == [ERROR] * 3 + [SKIPPED] * 7
    assert all(done.channel.sent_kinds(name) == [] for name in names[3:])


def test_a_device_away_at_first_is_retried_with_a_new_delivery_id(tmp_path: Path) -> None:
    scripts = {"dev-0000": DeviceScript(first_results=("silent",))}

    done = run_rollout(
        tmp_path, ["dev-0000"], scripts=scripts, inactivity_timeout=1.0, retry_backoff=5
    )

    [row] = done.result.rows
    assert (row.state, row.attempts, row.error) == (SUCCESS, 2, None)
    history = done.records.history("dev-0000")
    assert [(h.attempt, h.state) for h in history] == [(2, SUCCESS), (1, TIMED_OUT)]
    assert history[0].delivery_id == row.delivery_id != history[1].delivery_id
    assert [d.delivery_id for d in done.fleet["dev-0000"].deliveries] == [
        history[1].delivery_id, history[0].delivery_id,
    ]  # fmt: skip
    assert done.delays == [5.0]


def test_retries_back_off_exponentially_and_then_give_up(tmp_path: Path) -> None:
    scripts = {"dev-0000": DeviceScript(result="silent")}

    done = run_rollout(
        tmp_path, ["dev-0000"], scripts=scripts, inactivity_timeout=0.1, retries=2,
        retry_backoff=5, backoff_factor=2, max_failure_share=1,
    )  # fmt: skip

    [row] = done.result.rows
    assert (row.state, row.attempts, row.failure) == (TIMED_OUT, 3, "timeout")
    assert "inactivity timeout" in str(row.error)
    assert done.delays == [5.0, 10.0]
    assert [h.attempt for h in done.records.history("dev-0000")] == [3, 2, 1]


def test_a_device_error_is_not_retried_unless_configured(tmp_path: Path) -> None:
    scripts = {"dev-0000": DeviceScript(result="Error", error_reason="disk full")}

    default = run_rollout(tmp_path / "a", ["dev-0000"], scripts=scripts, max_failure_share=1)
    retried = run_rollout(
        tmp_path / "b", ["dev-0000"], scripts=scripts, max_failure_share=1,
        retry_on=frozenset({"device"}),
    )  # fmt: skip

    assert [(r.state, r.attempts, r.error) for r in default.result.rows] == [
        (ERROR, 1, "disk full")
    ]
    assert [(r.state, r.attempts) for r in retried.result.rows] == [(ERROR, 3)]


def test_transport_failures_are_retried(tmp_path: Path) -> None:
    done = run_rollout(
        tmp_path, ["dev-0000", "dev-0001"], canary_share=0, max_failure_share=1,
        channel_setup={"fail_sends_to": {"dev-0001"}},
    )  # fmt: skip

    assert [(r.state, r.attempts, r.failure) for r in done.result.rows] == [
        (SUCCESS, 1, None), (ERROR, 3, "transport"),
    ]  # fmt: skip
    assert "is not registered with the hub" in str(done.result.rows[1].error)


def test_parallelism_is_bounded(tmp_path: Path) -> None:
    # Each device holds its terminal state until 5 are busy at once: the rollout must
    # reach 5 in parallel to finish, and never more.
    probe = ConcurrencyProbe(release_at=5)

    done = run_rollout(tmp_path, devices(23), probe=probe, canary_share=0, max_parallel=5)

    assert done.result.counts == {SUCCESS: 23}
    assert probe.max_active == 5


def test_a_broken_reader_fails_the_rollout_instead_of_the_devices(tmp_path: Path) -> None:
    with pytest.raises(ChannelError, match="connection was lost"):
        run_rollout(tmp_path, devices(5), channel_setup={"fail_receive_after": 3})


def test_a_thousand_devices_in_one_process(tmp_path: Path) -> None:
    probe = ConcurrencyProbe()
    threads_seen: list[int] = [threading.active_count()]
    hub = LocalHub()
    store, package = make_package(tmp_path)
    channel = RecordingChannel(LocalChannel(hub))
    records = DeliveryRecords(f"sqlite:///{tmp_path / 'deliveries.db'}")
    names = devices(1000)
    plan = DeliveryPlan(package=package, devices=names, project_id="prod-bc", model_version="3")
    policy = FleetPolicy(inactivity_timeout=120, deadline=1200)

    async def watch_threads() -> None:
        while True:
            threads_seen.append(threading.active_count())
            await asyncio.sleep(0.05)

    async def run() -> FleetResult:
        async with FakeFleet(hub, names, probe=probe):
            watcher = asyncio.create_task(watch_threads())
            try:
                return await roll_out(plan, channel, store, records=records, policy=policy)
            finally:
                watcher.cancel()

    result = asyncio.run(run())

    assert result.counts == {SUCCESS: 1000}
    assert [r.device_id for r in result.rows] == names
    assert channel.readers == 1
    assert 1 < probe.max_active <= 50
    # One records writer and a few store-link workers; never a thread per device.
    assert max(threads_seen) - threads_seen[0] <= 10
    installed = records.installed()
    assert len(installed) == 1000
    assert {(i.package_version, i.model_version) for i in installed} == {("1.0.0", "3")}


def test_the_result_reports_every_device(tmp_path: Path) -> None:
    scripts = {"dev-0001": DeviceScript(result="Error", error_reason="checksum mismatch")}

    result = run_rollout(
        tmp_path, devices(3), scripts=scripts, canary_share=0, max_failure_share=1
    ).result

    table = result.table()
    assert [(r["device"], r["state"], r["attempts"], r["error"]) for r in table] == [
        ("dev-0000", SUCCESS, 1, ""),
        ("dev-0001", ERROR, 1, "checksum mismatch"),
        ("dev-0002", SUCCESS, 1, ""),
    ]
    assert {(r["package"], r["model_version"]) for r in table} == {("edge-model 1.0.0", "3")}
    assert all(isinstance(r["duration_s"], float) for r in table)
    assert [r.device_id for r in result.failed] == ["dev-0001"]
    assert result.summary() == "Delivered edge-model 1.0.0 to 3 device(s): 1 Error, 2 Success"
    assert "- dev-0001: Error after 1 attempt(s): checksum mismatch" in result.failure_message()


def test_policy_defaults_rings_and_backoff() -> None:
    policy = FleetPolicy()
    assert (policy.inactivity_timeout, policy.deadline, policy.max_parallel) == (120, 1800, 50)
    assert (policy.canary_share, policy.max_failure_share, policy.retries) == (0.1, 0.2, 2)
    assert [policy.backoff_delay(n) for n in (1, 2, 3)] == [5.0, 10.0, 20.0]
    assert policy.retry_on == {"timeout", "transport"}
    assert [len(r) for r in policy.rings(devices(10))] == [1, 9]
    assert [len(r) for r in policy.rings(devices(15))] == [2, 13]
    assert [len(r) for r in policy.rings(devices(3))] == [1, 2]
    assert [len(r) for r in policy.rings(devices(1))] == [1]
    assert [len(r) for r in FleetPolicy(canary_share=0).rings(devices(5))] == [5]
    with pytest.raises(ValidationError):
        FleetPolicy(max_parallel=0)
    with pytest.raises(ValidationError):
        FleetPolicy(retry_on=frozenset({"sometimes"}))  # type: ignore[arg-type]


def test_device_ids_come_as_one_a_list_or_a_comma_separated_string(tmp_path: Path) -> None:
    assert parse_device_ids("dev-1") == ("dev-1",)
    assert parse_device_ids(" dev-1, dev-2,,dev-1 ") == ("dev-1", "dev-2")
    assert parse_device_ids(["b", "a", " b "]) == ("b", "a")
    with pytest.raises(ValueError, match="no target device id"):
        parse_device_ids(" , ")
    _, package = make_package(tmp_path)
    plan = DeliveryPlan(package=package, devices="x, y", project_id="p")  # type: ignore[arg-type]
    assert plan.devices == ("x", "y")
    with pytest.raises(ValidationError, match="no target device id"):
        DeliveryPlan(package=package, devices=[], project_id="p")


def test_a_missing_package_says_how_to_build_it(tmp_path: Path) -> None:
    store, package = make_package(tmp_path)
    assert require_package(store, "edge-model", "1.0.0") == package
    with pytest.raises(PackageStoreError) as caught:
        require_package(store, "edge-model", "9.9.9")
    assert "package 'edge-model' version '9.9.9' is not in the folder package store" in str(
        caught.value
    )
    assert "package-model flow" in str(caught.value)


def test_hostile_device_messages_never_undo_the_rollout(tmp_path: Path) -> None:
    # One device sends 100,000-deep nesting, 5,000-deep attributes and NaN, before its
    # delivery and after it ended: those are skipped messages, every other device's
    # delivery goes on, and every record is closed.
    names = devices(6)
    scripts = {"dev-0001": DeviceScript(malformed=True)}

    done = run_rollout(tmp_path, names, scripts=scripts, canary_share=0.2, max_parallel=3)

    assert not done.result.aborted
    assert done.result.counts == {SUCCESS: 6}
    records = done.records.rollout("r1")
    assert {r.device_id for r in records} == set(names)
    assert all(r.state == SUCCESS and r.ended_at is not None for r in records)
