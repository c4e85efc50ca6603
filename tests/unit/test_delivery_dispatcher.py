"""One D2C reader for many sessions: routing, `since`, and errors that reach the caller."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from modelferry.delivery.channels.local import LocalChannel, LocalHub
from modelferry.delivery.dispatcher import DeliveryDispatcher
from modelferry.delivery.protocol.states import ERROR, SUCCESS
from modelferry.delivery.records.store import DeliveryRecords
from modelferry.delivery.records.writer import AsyncDeliveryRecords
from modelferry.delivery.session import DeliveryRequest, DeliverySession, SessionTimeouts
from modelferry.errors import ChannelError, DeliveryError
from tests.fake_devices import DeviceScript, FakeFleet, RecordingChannel, make_package

PATIENT = SessionTimeouts(inactivity=30, deadline=120)


def test_one_reader_routes_concurrent_sessions_by_delivery_id(tmp_path: Path) -> None:
    hub = LocalHub()
    store, package = make_package(tmp_path)
    channel = RecordingChannel(LocalChannel(hub))
    records = DeliveryRecords(f"sqlite:///{tmp_path / 'd.db'}")
    devices = [f"dev-{n:02d}" for n in range(20)]
    # Odd devices fail, so a misrouted answer would show in the outcomes.
    scripts = {
        device: DeviceScript(result="Error" if n % 2 else "Success", error_reason=device)
        for n, device in enumerate(devices)
    }

    async def run() -> list[Any]:
        background = AsyncDeliveryRecords(records)
        try:
            async with (
                FakeFleet(hub, scripts=scripts),
                DeliveryDispatcher(channel) as dispatcher,
            ):
                sessions = [
                    DeliverySession(
                        DeliveryRequest(device, "p", package),
                        dispatcher,
                        store,
                        records=background,
                        timeouts=PATIENT,
                    )
                    for device in devices
                ]
                outcomes = await asyncio.gather(*(s.run() for s in sessions))
                assert dispatcher.active == 0
                return outcomes
        finally:
            background.close()

    outcomes = asyncio.run(run())

    assert channel.readers == 1
    for n, (device, outcome) in enumerate(zip(devices, outcomes, strict=True)):
        assert outcome.device_id == device
        if n % 2:
            assert (outcome.state, outcome.error) == ("Error", device)
        else:
            assert outcome.state == SUCCESS
        record = records.get(outcome.delivery_id)
        assert record is not None
        assert (record.device_id, record.state) == (device, outcome.state)
    assert len({o.delivery_id for o in outcomes}) == 20


def test_the_channel_reads_from_before_the_first_new_delivery(tmp_path: Path) -> None:
    hub = LocalHub()
    store, package = make_package(tmp_path)
    channel = RecordingChannel(LocalChannel(hub))

    async def run() -> None:
        async with FakeFleet(hub, ["dev-1"]), DeliveryDispatcher(channel) as dispatcher:
            request = DeliveryRequest("dev-1", "p", package)
            outcome = await DeliverySession(request, dispatcher, store, timeouts=PATIENT).run()
            assert outcome.state == SUCCESS

    asyncio.run(run())

    first_sent = channel.sent[0][0]
    assert channel.opened_since is not None
    assert channel.opened_since <= first_sent
    assert channel.sent[0][1].properties["kind"] == "newDelivery"


def test_a_reader_that_fails_fails_every_waiting_session_and_the_dispatcher(
    tmp_path: Path,
) -> None:
    hub = LocalHub()
    store, package = make_package(tmp_path)
    channel = RecordingChannel(LocalChannel(hub))
    channel.fail_receive_after = 1
    silent = DeviceScript(result="silent")

    async def run() -> list[Any]:
        dispatcher = DeliveryDispatcher(channel)
        async with FakeFleet(hub, ["dev-1"], scripts={"dev-2": silent, "dev-3": silent}):
            await dispatcher.start()
            sessions = [
                DeliverySession(
                    DeliveryRequest(d, "p", package), dispatcher, store, timeouts=PATIENT
                )
                for d in ("dev-1", "dev-2", "dev-3")
            ]
            results = await asyncio.gather(*(s.run() for s in sessions), return_exceptions=True)
            # A session started after the failure fails at once, before sending anything.
            sent = len(channel.sent)
            late = DeliverySession(DeliveryRequest("dev-1", "p", package), dispatcher, store)
            with pytest.raises(ChannelError, match="connection was lost"):
                await late.run()
            assert len(channel.sent) == sent
            with pytest.raises(ChannelError, match="connection was lost"):
                await dispatcher.stop()
            return results

    results = asyncio.run(run())

    assert [type(r) for r in results] == [ChannelError] * 3
    assert all("connection was lost" in str(r) for r in results)


def test_a_channel_that_stops_delivering_is_an_error_for_waiting_sessions(tmp_path: Path) -> None:
    hub = LocalHub()
    store, package = make_package(tmp_path)
    inner = LocalChannel(hub)
    channel = RecordingChannel(inner)

    async def run() -> None:
        async with (
            FakeFleet(hub, scripts={"dev-1": DeviceScript(result="silent")}),
            DeliveryDispatcher(channel) as dispatcher,
        ):
            request = DeliveryRequest("dev-1", "p", package)
            session = asyncio.create_task(
                DeliverySession(request, dispatcher, store, timeouts=PATIENT).run()
            )
            while not channel.sent:
                await asyncio.sleep(0.01)
            await inner.close()  # the connection ends under the dispatcher
            await session

    with pytest.raises(ChannelError, match="stopped delivering device messages while 1"):
        asyncio.run(run())


class _RecordsThatFailLate(AsyncDeliveryRecords):
    async def transition(self, delivery_id: str, state: str, **fields: Any) -> bool:
        if fields.get("ignore"):
            raise DeliveryError("the records database went away")
        return await super().transition(delivery_id, state, **fields)


def test_an_error_while_handling_a_late_event_reaches_the_caller(tmp_path: Path) -> None:
    hub = LocalHub()
    store, package = make_package(tmp_path)
    records = DeliveryRecords(f"sqlite:///{tmp_path / 'd.db'}")
    script = DeviceScript(duplicate_terminal=True)

    async def run() -> None:
        background = _RecordsThatFailLate(records)
        try:
            async with (
                FakeFleet(hub, scripts={"dev-1": script}),
                DeliveryDispatcher(LocalChannel(hub)) as dispatcher,
            ):
                request = DeliveryRequest("dev-1", "p", package)
                session = DeliverySession(
                    request, dispatcher, store, records=background, timeouts=PATIENT
                )
                assert (await session.run()).state == SUCCESS
                while dispatcher.failure is None:
                    await asyncio.sleep(0.01)
        finally:
            background.close()

    with pytest.raises(DeliveryError, match="the records database went away"):
        asyncio.run(run())


def test_a_delivery_is_dispatched_once_and_only_while_running(tmp_path: Path) -> None:
    async def run() -> None:
        dispatcher = DeliveryDispatcher(LocalChannel(LocalHub()))
        with pytest.raises(DeliveryError, match="not running"):
            dispatcher.subscribe("d1", "dev-1")
        async with dispatcher:
            dispatcher.subscribe("d1", "dev-1")
            with pytest.raises(DeliveryError, match="already being dispatched"):
                dispatcher.subscribe("d1", "dev-1")
            await dispatcher.unsubscribe("d1")
            with pytest.raises(DeliveryError, match="already being dispatched"):
                dispatcher.subscribe("d1", "dev-1")

    asyncio.run(run())


def test_sessions_stopped_by_a_failed_reader_close_their_records_as_errors(
    tmp_path: Path,
) -> None:
    hub = LocalHub()
    store, package = make_package(tmp_path)
    channel = RecordingChannel(LocalChannel(hub))
    channel.fail_receive_after = 1
    records = DeliveryRecords(f"sqlite:///{tmp_path / 'deliveries.db'}")
    silent = DeviceScript(result="silent")

    async def run() -> list[str]:
        background = AsyncDeliveryRecords(records)
        try:
            dispatcher = DeliveryDispatcher(channel)
            async with FakeFleet(hub, ["dev-1"], scripts={"dev-2": silent}):
                await dispatcher.start()
                requests = [DeliveryRequest(d, "p", package) for d in ("dev-1", "dev-2")]
                sessions = [
                    DeliverySession(r, dispatcher, store, records=background, timeouts=PATIENT)
                    for r in requests
                ]
                await asyncio.gather(*(s.run() for s in sessions), return_exceptions=True)
                with pytest.raises(ChannelError):
                    await dispatcher.stop()
            return [r.delivery_id for r in requests]
        finally:
            background.close()

    ids = asyncio.run(run())

    for delivery_id in ids:
        record = records.get(delivery_id)
        assert record is not None
        assert record.ended_at is not None, f"{delivery_id} left open in {record.state}"
        assert record.state == ERROR
        assert record.error is not None
        assert "connection was lost" in record.error
