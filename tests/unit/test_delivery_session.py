"""One delivery to one device: the state machine, the link, the two clocks, tolerance."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from modelferry.delivery.channels.local import LocalChannel, LocalHub
from modelferry.delivery.dispatcher import DeliveryDispatcher
from modelferry.delivery.outcomes import DeliveryOutcome
from modelferry.delivery.protocol.messages import Message, state_report
from modelferry.delivery.protocol.states import ERROR, NOTIFIED, PENDING, SUCCESS, TIMED_OUT
from modelferry.delivery.records.store import DeliveryRecords, TransitionRecord
from modelferry.delivery.records.writer import AsyncDeliveryRecords
from modelferry.delivery.session import DeliveryRequest, DeliverySession, SessionTimeouts
from tests.fake_devices import (
    DeviceScript,
    FakeDevice,
    FakeFleet,
    FolderPackageStore,
    RecordingChannel,
    make_package,
)

DEVICE = "dev-1"
PROJECT = "prod-bc"
#: Clocks long enough never to run out in a test that expects an answer.
PATIENT = SessionTimeouts(inactivity=30, deadline=120)


@dataclass
class Delivered:
    outcome: DeliveryOutcome
    device: FakeDevice
    channel: RecordingChannel
    store: FolderPackageStore
    records: DeliveryRecords

    def transitions(self) -> list[TransitionRecord]:
        return self.records.transitions(self.outcome.delivery_id)

    def applied(self) -> list[str]:
        return [t.state for t in self.transitions() if not t.ignored]


def deliver(
    tmp_path: Path,
    script: DeviceScript | None = None,
    *,
    timeouts: SessionTimeouts = PATIENT,
    prepare: Callable[[RecordingChannel, FolderPackageStore, LocalHub], None] | None = None,
    settle: int = 0,
) -> Delivered:
    """Deliver one package to one fake device; wait for `settle` late transitions."""
    hub = LocalHub()
    store, package = make_package(tmp_path)
    channel = RecordingChannel(LocalChannel(hub))
    records = DeliveryRecords(f"sqlite:///{tmp_path / 'deliveries.db'}")
    if prepare is not None:
        prepare(channel, store, hub)

    async def run() -> tuple[DeliveryOutcome, FakeDevice]:
        background = AsyncDeliveryRecords(records)
        fleet = FakeFleet(hub, scripts={DEVICE: script or DeviceScript()})
        try:
            async with fleet, DeliveryDispatcher(channel) as dispatcher:
                request = DeliveryRequest(DEVICE, PROJECT, package, "bc", "3")
                session = DeliverySession(
                    request, dispatcher, store, records=background, timeouts=timeouts
                )
                outcome = await session.run()
                for _ in range(500):
                    if len(records.transitions(outcome.delivery_id)) >= settle:
                        break
                    await asyncio.sleep(0.01)
        finally:
            background.close()
        return outcome, fleet[DEVICE]

    outcome, device = asyncio.run(run())
    return Delivered(outcome, device, channel, store, records)


def test_a_device_that_installs_ends_in_success_with_every_state_recorded(tmp_path: Path) -> None:
    done = deliver(tmp_path)

    assert done.outcome.state == SUCCESS
    assert done.outcome.succeeded
    assert (done.outcome.error, done.outcome.failure, done.outcome.attempt) == (None, None, 1)
    assert done.outcome.links_issued == 1
    assert done.applied() == [
        PENDING, NOTIFIED, "Received", "Downloading", "Downloading", "Verifying", "Installing",
        SUCCESS,
    ]  # fmt: skip
    steps = done.transitions()
    assert [t.attributes.get("progress") for t in steps if t.state == "Downloading"] == [50, 100]
    assert all(t.reported_at is not None for t in steps[2:])
    record = done.records.get(done.outcome.delivery_id)
    assert record is not None
    assert (record.device_id, record.project_id, record.package_id, record.model_version) == (
        DEVICE, PROJECT, "edge-model", "3",
    )  # fmt: skip
    assert done.channel.sent_kinds(DEVICE) == ["newDelivery", "presignedUrlResponse"]
    [delivery] = done.device.deliveries
    assert (delivery.delivery_id, delivery.package_id, delivery.package_version) == (
        done.outcome.delivery_id, "edge-model", "1.0.0",
    )  # fmt: skip
    assert done.device.downloads == [b"package edge-model 1.0.0"]


def test_each_link_request_gets_a_fresh_link(tmp_path: Path) -> None:
    done = deliver(tmp_path, DeviceScript(link_requests=2))

    assert done.outcome.state == SUCCESS
    assert done.outcome.links_issued == 2
    assert done.store.links_made == 2
    assert len(set(done.device.links)) == 2
    assert done.device.downloads == [b"package edge-model 1.0.0"] * 2
    assert done.channel.sent_kinds(DEVICE) == [
        "newDelivery", "presignedUrlResponse", "presignedUrlResponse",
    ]  # fmt: skip


def test_a_device_error_ends_the_delivery_with_its_reason(tmp_path: Path) -> None:
    done = deliver(tmp_path, DeviceScript(result="Error", error_reason="disk full"))

    assert (done.outcome.state, done.outcome.failure) == (ERROR, "device")
    assert done.outcome.error == "disk full"
    record = done.records.get(done.outcome.delivery_id)
    assert record is not None
    assert (record.state, record.error) == (ERROR, "disk full")


def test_a_silent_device_times_out_on_inactivity(tmp_path: Path) -> None:
    done = deliver(
        tmp_path, DeviceScript(result="silent"), timeouts=SessionTimeouts(0.2, deadline=60)
    )

    assert (done.outcome.state, done.outcome.failure) == (TIMED_OUT, "timeout")
    error = str(done.outcome.error)
    assert "sent nothing for 0.2 s (inactivity timeout, last state Notified)" in error
    assert "device is online and its delivery agent is running" in error
    assert done.applied() == [PENDING, NOTIFIED, TIMED_OUT]
    record = done.records.get(done.outcome.delivery_id)
    assert record is not None
    assert (record.state, record.error) == (TIMED_OUT, error)


def test_a_device_that_goes_quiet_half_way_times_out_in_its_last_state(tmp_path: Path) -> None:
    done = deliver(
        tmp_path, DeviceScript(stop_after="Downloading"), timeouts=SessionTimeouts(1.0, 60)
    )

    assert done.outcome.state == TIMED_OUT
    assert "sent nothing for 1 s (inactivity timeout, last state Downloading)" in str(
        done.outcome.error
    )
    assert done.applied()[-2:] == ["Downloading", TIMED_OUT]


def test_a_device_that_never_finishes_misses_the_deadline(tmp_path: Path) -> None:
    # It reports progress every 20 ms, so only the deadline can end it.
    done = deliver(tmp_path, DeviceScript(tick=0.02), timeouts=SessionTimeouts(30, deadline=1))

    assert done.outcome.state == TIMED_OUT
    error = str(done.outcome.error)
    assert "did not finish within the 1 s deadline (last state " in error
    assert "allow a longer deadline" in error
    assert done.applied()[-1] == TIMED_OUT


def test_malformed_messages_are_logged_and_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="modelferry.delivery")

    done = deliver(tmp_path, DeviceScript(malformed=True))

    assert done.outcome.state == SUCCESS
    assert done.applied()[:3] == [PENDING, NOTIFIED, "Received"]
    skipped = [r.getMessage() for r in caplog.records if "malformed" in r.getMessage()]
    # Eight before the delivery, the same eight after it ended (the late path).
    assert len(skipped) == 16
    assert any("not UTF-8 JSON" in message for message in skipped)
    assert any("nested deeper than 32 levels" in message for message in skipped)
    assert any("NaN is not a JSON value" in message for message in skipped)
    assert any("no valid 'timestamp'" in message for message in skipped)


def test_a_device_that_leaves_out_the_optional_fields_is_served(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The reference agent may omit projectId, timestamp, eventId and packageId.
    caplog.set_level(logging.DEBUG, logger="modelferry.delivery")

    done = deliver(tmp_path, DeviceScript(minimal=True))

    assert done.outcome.state == SUCCESS
    assert done.applied() == [PENDING, NOTIFIED, "Received", "Downloading", "Downloading",
                              "Verifying", "Installing", SUCCESS]  # fmt: skip
    assert not [r for r in caplog.records if "malformed" in r.getMessage()]
    assert not [r for r in caplog.records if "answers for project" in r.getMessage()]


def test_events_of_other_deliveries_and_without_a_delivery_id_are_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="modelferry.delivery")

    done = deliver(tmp_path, DeviceScript(foreign=True))

    assert done.outcome.state == SUCCESS
    assert done.records.get("someone-elses-delivery") is None
    messages = [r.getMessage() for r in caplog.records]
    assert any("without a deliveryId" in m for m in messages)
    assert any("'someone-elses-delivery', which is not ours" in m for m in messages)


def test_a_report_from_another_device_is_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="modelferry.delivery")

    def impostor(channel: RecordingChannel, store: FolderPackageStore, hub: LocalHub) -> None:
        # As soon as the newDelivery goes out, another device claims it failed.
        original = channel.send

        async def send(message: Message) -> None:
            await original(message)
            if message.properties.get("kind") == "newDelivery":
                hub.deliver_d2c(
                    state_report(
                        "intruder",
                        delivery_id=str(message.delivery_id),
                        project_id=PROJECT,
                        state="Error",
                        attributes={"reason": "not me"},
                    )
                )

        channel.send = send  # type: ignore[method-assign]

    done = deliver(tmp_path, prepare=impostor)

    assert done.outcome.state == SUCCESS
    assert any("from device 'intruder': that delivery goes to 'dev-1'" in r.getMessage()
               for r in caplog.records)  # fmt: skip


def test_duplicate_and_contradicting_terminal_states_are_ignored_and_recorded(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="modelferry.delivery")
    script = DeviceScript(duplicate_terminal=True, late_states=("Installing",))

    # Pending, Notified, 5 reported states, Success, then 3 late ones.
    done = deliver(tmp_path, script, settle=11)

    assert done.outcome.state == SUCCESS
    steps = done.transitions()
    assert [(t.state, t.ignored) for t in steps[-4:]] == [
        (SUCCESS, False), (SUCCESS, True), (ERROR, True), ("Installing", True),
    ]  # fmt: skip
    assert sum(1 for t in steps if t.state == SUCCESS and not t.ignored) == 1
    record = done.records.get(done.outcome.delivery_id)
    assert record is not None
    assert (record.state, record.error) == (SUCCESS, None)
    late = [r.getMessage() for r in caplog.records if "has already ended" in r.getMessage()]
    assert len(late) == 3


def test_a_late_report_older_than_the_current_state_is_recorded_not_applied(
    tmp_path: Path,
) -> None:
    done = deliver(tmp_path, DeviceScript(stale_state="Downloading", extra_states=("Unpacking",)))

    assert done.outcome.state == SUCCESS
    steps = done.transitions()
    assert [(t.state, t.ignored) for t in steps[-4:]] == [
        ("Verifying", False), ("Installing", False), ("Downloading", True), (SUCCESS, False),
    ]  # fmt: skip
    assert steps[-2].note == "reported before the current state (out of order)"
    assert "Unpacking" in done.applied()


def test_a_store_that_gives_no_link_ends_the_delivery_as_a_store_failure(tmp_path: Path) -> None:
    def refuse(channel: RecordingChannel, store: FolderPackageStore, hub: LocalHub) -> None:
        store.fail_links = True

    done = deliver(tmp_path, prepare=refuse)

    assert (done.outcome.state, done.outcome.failure) == (ERROR, "store")
    assert "the folder store gave no link to edge-model 1.0.0" in str(done.outcome.error)


def test_a_send_the_transport_refuses_is_a_transport_failure(tmp_path: Path) -> None:
    def unreachable(channel: RecordingChannel, store: FolderPackageStore, hub: LocalHub) -> None:
        channel.fail_sends_to.add(DEVICE)

    done = deliver(tmp_path, prepare=unreachable)

    assert (done.outcome.state, done.outcome.failure) == (ERROR, "transport")
    assert "could not send newDelivery to device 'dev-1'" in str(done.outcome.error)
    assert done.applied() == [PENDING, ERROR]


def test_timeouts_must_be_positive() -> None:
    with pytest.raises(ValueError, match="must be positive"):
        SessionTimeouts(inactivity=0)


def test_a_cancelled_session_closes_its_record_as_an_error(tmp_path: Path) -> None:
    hub = LocalHub()
    store, package = make_package(tmp_path)
    records = DeliveryRecords(f"sqlite:///{tmp_path / 'deliveries.db'}")
    request = DeliveryRequest(DEVICE, PROJECT, package, "bc", "3")

    async def run() -> None:
        background = AsyncDeliveryRecords(records)
        fleet = FakeFleet(hub, scripts={DEVICE: DeviceScript(result="silent")})
        try:
            async with fleet, DeliveryDispatcher(LocalChannel(hub)) as dispatcher:
                session = DeliverySession(
                    request, dispatcher, store, records=background, timeouts=PATIENT
                )
                task = asyncio.create_task(session.run())
                while session.state != NOTIFIED:
                    await asyncio.sleep(0.01)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
        finally:
            background.close()

    asyncio.run(run())

    record = records.get(request.delivery_id)
    assert record is not None
    assert (record.state, record.ended_at is not None) == (ERROR, True)
    assert record.error == "the delivery was cancelled before the device finished"
