"""The contract every delivery transport keeps, as one suite.

The contract is written in `modelferry.delivery.channels.base`.

Subclass `DeliveryTransportContract` in a `Test...` class and provide a `transports`
fixture returning `Transports`:

- `channel()`: a new, unopened cloud channel. Every call within one test must name the
  same session (same client id, same hub), so a reopened channel resumes the last one.
- `device(device_id)`: a new, unopened device transport for that device.
- `unreachable_channel()` / `unreachable_device(device_id)`: transports whose `open()`
  cannot reach their broker or hub; leave them None where nothing can be unreachable.

Device ids come from the `device_id` fixture, unique per test, so tests may share a broker.
Transports may carry `contentType`/`contentEncoding` as system properties rather than
application properties (IoT Hub and the MQTT transport do); the suite ignores those two.
Set `arbitrary_c2d_properties = False` for a transport whose service refuses some
characters in C2D properties (IoT Hub).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import pytest

from modelferry.delivery.channels.base import DeliveryChannel, DeviceTransport
from modelferry.delivery.protocol import messages
from modelferry.delivery.protocol.messages import Message, NewDelivery, StateReport, UrlRequest
from modelferry.errors import ChannelError, MalformedMessageError

CONTENT_PROPERTIES = frozenset({"contentType", "contentEncoding"})
SPECIAL = {
    "deliveryId": "a&b=c/d e%f+g?h#i",
    "projectId": "projekt-ü-проект-✓",
    "note": "=&=&  /",
}

_T = TypeVar("_T")


@dataclass
class Transports:
    """How the suite makes the transports under test."""

    channel: Callable[[], DeliveryChannel]
    device: Callable[[str], DeviceTransport]
    unreachable_channel: Callable[[], DeliveryChannel] | None = None
    unreachable_device: Callable[[str], DeviceTransport] | None = None


def protocol_properties(properties: Mapping[str, str]) -> dict[str, str]:
    """The properties every transport must carry unchanged."""
    return {k: v for k, v in properties.items() if k not in CONTENT_PROPERTIES}


async def take(
    source: DeliveryChannel | DeviceTransport,
    count: int,
    *,
    devices: set[str] | None = None,
    timeout_s: float = 15.0,
) -> list[Message]:
    """The next `count` messages `source` receives (only from `devices`, when given)."""
    received: list[Message] = []
    stream: Any = source.receive()

    async def collect() -> None:
        async for message in stream:
            if devices is None or message.device_id in devices:
                received.append(message)
                if len(received) == count:
                    return

    try:
        await asyncio.wait_for(collect(), timeout_s)
    except TimeoutError:
        pytest.fail(f"received {len(received)} of {count} messages in {timeout_s} s: {received}")
    finally:
        await stream.aclose()
    return received


async def nothing_more(source: DeliveryChannel | DeviceTransport, wait_s: float = 0.3) -> None:
    """Fail if `source` receives anything within `wait_s`."""
    stream: Any = source.receive()
    try:
        extra = await asyncio.wait_for(anext(stream), wait_s)
    except TimeoutError:
        return
    finally:
        await stream.aclose()
    pytest.fail(f"unexpected message {extra}")


def run(scenario: Callable[[], Awaitable[_T]], timeout_s: float = 60.0) -> _T:
    """Run one async scenario on a fresh event loop, bounded in time."""

    async def bounded() -> _T:
        return await asyncio.wait_for(scenario(), timeout_s)

    return asyncio.run(bounded())


def new_delivery(device_id: str, delivery_id: str = "del-1") -> Message:
    """A C2D newDelivery for the suite's package."""
    return messages.new_delivery(
        device_id,
        delivery_id=delivery_id,
        project_id="proj-1",
        package_id="pkg-1",
        package_version="3",
    )


def state(device_id: str, state_name: str, delivery_id: str = "del-1") -> Message:
    """A D2C state report with a little progress in its attributes."""
    return messages.state_report(
        device_id,
        delivery_id=delivery_id,
        project_id="proj-1",
        state=state_name,
        attributes={"progress": 50},
    )


class DeliveryTransportContract:
    """Shared tests; not collected by itself (no `Test` prefix)."""

    arbitrary_c2d_properties: bool = True

    @pytest.fixture
    def device_id(self) -> Callable[[str], str]:
        """Makes device ids unique to this test: `device_id("a")`."""
        run_id = uuid.uuid4().hex[:8]
        return lambda name: f"ct-{run_id}-{name}"

    def check_same(self, received: Message, sent: Message, device_id: str) -> None:
        """Check that `received` is `sent`, as the transport delivered it for `device_id`.

        The body and protocol properties must be equal; the transport may add content
        properties and an enqueued time, which must be timezone-aware.
        """
        assert received.device_id == device_id
        assert received.body == sent.body
        assert protocol_properties(received.properties) == protocol_properties(sent.properties)
        assert set(received.properties) - set(sent.properties) <= CONTENT_PROPERTIES
        if received.enqueued_at is not None:
            assert received.enqueued_at.tzinfo is not None

    def test_c2d_message_reaches_its_device(
        self, transports: Transports, device_id: Callable[[str], str]
    ) -> None:
        dev = device_id("a")
        sent = new_delivery(dev)

        async def scenario() -> None:
            async with transports.device(dev) as device, transports.channel() as channel:
                await channel.send(sent)
                [received] = await take(device, 1)
            self.check_same(received, sent, dev)
            event = messages.parse(received)
            assert isinstance(event, NewDelivery)
            assert (event.delivery_id, event.package_id, event.package_version) == (
                "del-1",
                "pkg-1",
                "3",
            )

        run(scenario)

    def test_d2c_messages_reach_the_channel_from_the_sending_device(
        self, transports: Transports, device_id: Callable[[str], str]
    ) -> None:
        dev = device_id("a")
        request = messages.presigned_url_request(
            dev, delivery_id="del-1", project_id="proj-1", package_id="pkg-1"
        )
        report = state(dev, "Downloading")

        async def scenario() -> None:
            async with transports.channel() as channel, transports.device(dev) as device:
                await device.send(request)
                await device.send(report)
                received = await take(channel, 2, devices={dev})
            self.check_same(received[0], request, dev)
            self.check_same(received[1], report, dev)
            assert isinstance(messages.parse(received[0]), UrlRequest)
            parsed = messages.parse(received[1])
            assert isinstance(parsed, StateReport)
            assert (parsed.state, dict(parsed.attributes)) == ("Downloading", {"progress": 50})

        run(scenario)

    def test_a_device_cannot_speak_for_another(
        self, transports: Transports, device_id: Callable[[str], str]
    ) -> None:
        dev, other = device_id("a"), device_id("other")

        async def scenario() -> None:
            async with transports.channel() as channel, transports.device(dev) as device:
                await device.send(state(other, "Success"))
                [received] = await take(channel, 1, devices={dev, other})
            assert received.device_id == dev

        run(scenario)

    def test_each_device_gets_only_its_own_messages(
        self, transports: Transports, device_id: Callable[[str], str]
    ) -> None:
        ids = [device_id(name) for name in ("a", "b", "c")]

        async def scenario() -> None:
            devices = [transports.device(dev) for dev in ids]
            for device in devices:
                await device.open()
            try:
                async with transports.channel() as channel:
                    for dev in ids:
                        await channel.send(new_delivery(dev, delivery_id=f"for-{dev}"))
                for dev, device in zip(ids, devices, strict=True):
                    [received] = await take(device, 1)
                    assert (received.device_id, received.delivery_id) == (dev, f"for-{dev}")
                    await nothing_more(device)
            finally:
                for device in devices:
                    await device.close()

        run(scenario)

    def test_messages_arrive_in_the_order_sent(
        self, transports: Transports, device_id: Callable[[str], str]
    ) -> None:
        dev = device_id("a")
        count = 10

        async def scenario() -> None:
            async with transports.channel() as channel, transports.device(dev) as device:
                for index in range(count):
                    await channel.send(new_delivery(dev, delivery_id=f"c2d-{index}"))
                    await device.send(state(dev, "Installing", delivery_id=f"d2c-{index}"))
                c2d = await take(device, count)
                d2c = await take(channel, count, devices={dev})
            assert [m.delivery_id for m in c2d] == [f"c2d-{i}" for i in range(count)]
            assert [m.delivery_id for m in d2c] == [f"d2c-{i}" for i in range(count)]

        run(scenario)

    def test_a_device_gets_what_was_sent_while_it_was_away(
        self, transports: Transports, device_id: Callable[[str], str]
    ) -> None:
        dev = device_id("away")

        async def scenario() -> None:
            async with transports.device(dev):
                pass  # known to the broker or hub from now on
            async with transports.channel() as channel:
                await channel.send(new_delivery(dev, delivery_id="first"))
                await channel.send(new_delivery(dev, delivery_id="second"))
            async with transports.device(dev) as device:
                received = await take(device, 2)
            assert [m.delivery_id for m in received] == ["first", "second"]

        run(scenario)

    def test_a_reopened_channel_reads_what_came_since(
        self, transports: Transports, device_id: Callable[[str], str]
    ) -> None:
        dev = device_id("a")

        async def scenario() -> None:
            async with transports.channel():
                pass  # the channel's session exists from now on
            since = messages.utc_now()
            async with transports.device(dev) as device:
                await device.send(state(dev, "Success", delivery_id="while-closed"))
            channel = transports.channel()
            await channel.open(since)
            try:
                [received] = await take(channel, 1, devices={dev})
            finally:
                await channel.close()
            assert received.delivery_id == "while-closed"

        run(scenario)

    def test_malformed_messages_are_yielded_for_the_parser_to_reject(
        self, transports: Transports, device_id: Callable[[str], str]
    ) -> None:
        dev = device_id("a")
        broken = Message(dev, {"type": "state"}, b"\xffnot json")

        async def scenario() -> None:
            async with transports.channel() as channel, transports.device(dev) as device:
                await device.send(broken)
                await device.send(state(dev, "Success"))
                first, second = await take(channel, 2, devices={dev})
            assert first.body == broken.body
            with pytest.raises(MalformedMessageError):
                messages.parse(first)
            assert isinstance(messages.parse(second), StateReport)

        run(scenario)

    def test_property_values_with_reserved_characters_survive(
        self, transports: Transports, device_id: Callable[[str], str]
    ) -> None:
        dev = device_id("a")
        d2c = replace(state(dev, "Received"), properties={"type": "state", **SPECIAL})
        c2d = replace(new_delivery(dev), properties={"type": "event", **SPECIAL})

        async def scenario() -> None:
            async with transports.channel() as channel, transports.device(dev) as device:
                await device.send(d2c)
                [received] = await take(channel, 1, devices={dev})
                self.check_same(received, d2c, dev)
                if self.arbitrary_c2d_properties:
                    await channel.send(c2d)
                    [received] = await take(device, 1)
                    self.check_same(received, c2d, dev)

        run(scenario)

    def test_close_ends_receive_and_is_idempotent(
        self, transports: Transports, device_id: Callable[[str], str]
    ) -> None:
        dev = device_id("a")

        async def drain(source: DeliveryChannel | DeviceTransport) -> int:
            return len([message async for message in source.receive()])

        async def scenario() -> None:
            channel, device = transports.channel(), transports.device(dev)
            await channel.open()
            await device.open()
            readers = [asyncio.create_task(drain(channel)), asyncio.create_task(drain(device))]
            await asyncio.sleep(0.2)
            for transport in (channel, device):
                await transport.close()
                await transport.close()
            assert await asyncio.wait_for(asyncio.gather(*readers), 10) == [0, 0]

        run(scenario)

    def test_using_a_transport_that_is_not_open_raises(
        self, transports: Transports, device_id: Callable[[str], str]
    ) -> None:
        dev = device_id("a")

        async def scenario() -> None:
            channel, device = transports.channel(), transports.device(dev)
            with pytest.raises(ChannelError):
                await channel.send(new_delivery(dev))
            with pytest.raises(ChannelError):
                await device.send(state(dev, "Success"))
            for transport in (channel, device):
                stream: Any = transport.receive()
                with pytest.raises(ChannelError):
                    await anext(stream)

        run(scenario)

    def test_open_raises_channel_error_when_nothing_answers(
        self, transports: Transports, device_id: Callable[[str], str]
    ) -> None:
        # Transports with nothing to reach (in-process) override this test.
        assert transports.unreachable_channel is not None
        assert transports.unreachable_device is not None
        channel = transports.unreachable_channel()
        device = transports.unreachable_device(device_id("a"))

        async def scenario() -> None:
            with pytest.raises(ChannelError):
                await channel.open()
            with pytest.raises(ChannelError):
                await device.open()
            await channel.close()
            await device.close()

        run(scenario)
