"""Hostile device-to-cloud messages against `messages.parse` and a live delivery session.

A live session on the in-process channel receives generated messages (deep nesting, NaN,
huge strings, wrong types, missing fields, random bytes) interleaved with a real device's
valid ones; whatever arrives, the delivery ends in a final state, its record is closed and
the dispatcher's reader keeps reading.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelferry.delivery.channels.local import LocalChannel, LocalDeviceTransport, LocalHub
from modelferry.delivery.dispatcher import DeliveryDispatcher
from modelferry.delivery.protocol import messages as m
from modelferry.delivery.protocol.states import FINAL_STATES, SUCCESS
from modelferry.delivery.records.store import DeliveryRecords
from modelferry.delivery.records.writer import AsyncDeliveryRecords
from modelferry.delivery.session import DeliveryRequest, DeliverySession, SessionTimeouts
from modelferry.errors import MalformedMessageError
from tests.fake_devices import make_package

pytestmark = pytest.mark.fuzz

DEVICE = "dev-1"
PROJECT = "prod-bc"
PATIENT = SessionTimeouts(inactivity=30, deadline=60)

_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=50),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


def _deep(depth: int, opener: str, closer: str) -> bytes:
    return (opener * depth + closer * depth).encode()


_bodies = st.one_of(
    st.binary(max_size=200),
    _json.map(lambda value: json.dumps(value).encode()),
    st.dictionaries(
        st.sampled_from(["state", "timestamp", "attributes", "packageId", "eventId", "x"]),
        _json,
        max_size=5,
    ).map(lambda value: json.dumps(value).encode()),
    st.integers(1, 100_000).map(lambda depth: _deep(depth, "[", "]")),
    st.integers(1, 5_000).map(
        lambda depth: (
            b'{"state":"Received","timestamp":"2026-01-01T00:00:00Z","attributes":'
            + b'{"a":' * depth
            + b"1"
            + b"}" * depth
            + b"}"
        )
    ),
    st.just(b'{"state":"Downloading","timestamp":"2026-01-01T00:00:00Z","attributes":{"b":NaN}}'),
    st.integers(0, 2_000_000).map(
        lambda size: json.dumps(
            {
                "state": "Downloading",
                "timestamp": "2026-01-01T00:00:00Z",
                "attributes": {"log": "x" * size},
            }
        ).encode()
    ),
    st.just(b'{"state":"Received","timestamp":"9999-12-31T23:59:59Z"}'),
)

_properties = st.dictionaries(
    st.sampled_from(["type", "kind", "deliveryId", "projectId", "contentType"]),
    st.sampled_from(["state", "event", "data", "presignedUrlRequest", "", PROJECT]),
    max_size=5,
)


@st.composite
def hostile_messages(draw: st.DrawFn) -> tuple[dict[str, str], bytes]:
    """Properties (merged over a real delivery's) and a body, both drawn."""
    properties = draw(_properties)
    if draw(st.booleans()):
        properties = {"type": "state", "projectId": PROJECT, **properties}
    return properties, draw(_bodies)


@settings(max_examples=200)
@given(properties=_properties, body=_bodies)
def test_parse_returns_an_event_or_raises_malformed_message(
    properties: dict[str, str], body: bytes
) -> None:
    message = m.Message(DEVICE, {"deliveryId": "d-1", **properties}, body)
    try:
        event = m.parse(message)
    except MalformedMessageError:
        return
    if isinstance(event, m.StateReport):
        json.dumps(dict(event.attributes), allow_nan=False)
        assert event.timestamp <= m.utc_now() + m.CLOCK_SKEW


async def _device(hub: LocalHub, hostile: list[tuple[dict[str, str], bytes]], split: int) -> None:
    """A real device that interleaves `hostile` messages with its valid ones."""
    transport = LocalDeviceTransport(DEVICE, hub)
    await transport.open()
    try:
        async for notice in transport.receive():
            delivery = notice.properties["deliveryId"]

            async def junk(
                batch: list[tuple[dict[str, str], bytes]], delivery: str = delivery
            ) -> None:
                for properties, body in batch:
                    props = {"deliveryId": delivery, **properties}
                    await transport.send(m.Message(DEVICE, props, body))

            ids: dict[str, Any] = {"delivery_id": delivery, "project_id": PROJECT}
            await junk(hostile[:split])
            await transport.send(m.state_report(DEVICE, state="Received", **ids))
            await transport.send(m.presigned_url_request(DEVICE, package_id="edge-model", **ids))
            await junk(hostile[split:])
            await transport.send(m.state_report(DEVICE, state="Success", **ids))
            # The same junk after the delivery ended goes to the late-message path.
            await junk(hostile)
    finally:
        await transport.close()


@settings(max_examples=15)
@given(hostile=st.lists(hostile_messages(), max_size=6), data=st.data())
def test_a_live_session_survives_hostile_device_messages(
    hostile: list[tuple[dict[str, str], bytes]], data: st.DataObject
) -> None:
    split = data.draw(st.integers(0, len(hostile)))
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        hub = LocalHub()
        store, package = make_package(root)
        records = DeliveryRecords(f"sqlite:///{root / 'deliveries.db'}")

        async def run() -> tuple[list[str], BaseException | None]:
            background = AsyncDeliveryRecords(records)
            try:
                async with DeliveryDispatcher(LocalChannel(hub)) as dispatcher:
                    device = asyncio.create_task(_device(hub, hostile, split))
                    first = DeliverySession(
                        DeliveryRequest(DEVICE, PROJECT, package),
                        dispatcher, store, records=background, timeouts=PATIENT,
                    )  # fmt: skip
                    outcome = await first.run()
                    assert outcome.state == SUCCESS
                    # The reader is still alive: a second delivery on it completes too.
                    second = DeliverySession(
                        DeliveryRequest(DEVICE, PROJECT, package),
                        dispatcher, store, records=background, timeouts=PATIENT,
                    )  # fmt: skip
                    again = await second.run()
                    assert again.state == SUCCESS
                    failure = dispatcher.failure
                    device.cancel()
                    await asyncio.gather(device, return_exceptions=True)
                return [outcome.delivery_id, again.delivery_id], failure
            finally:
                background.close()

        try:
            ids, failure = asyncio.run(run())
            assert failure is None
            for delivery_id in ids:
                record = records.get(delivery_id)
                assert record is not None
                assert record.state in FINAL_STATES
                assert record.ended_at is not None
        finally:
            records.close()
