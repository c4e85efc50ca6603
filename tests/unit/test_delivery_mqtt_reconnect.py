"""The MQTT client's reconnect: jittered doubling waits, even before the first try.

A client whose connection attempts fail on demand (no broker; the real reconnect against
Mosquitto is in tests/integration/test_delivery_mqtt_resilience.py), with an injected sleep
that records each wait.
"""

from __future__ import annotations

import asyncio
import errno
import logging

import pytest
from paho.mqtt.enums import MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from modelferry.delivery.channels.mqtt.client import AsyncMqttClient, ClientSettings, _Refused
from modelferry.errors import ChannelError

SETTINGS = ClientSettings(
    host="broker.invalid",
    port=1883,
    client_id="edge-7",
    protocol=MQTTProtocolVersion.MQTTv5,
    credentials=lambda: (None, None),
    tls=None,
    keepalive_s=60,
    session_expiry_s=3600,
    connect_timeout_s=1.0,
    reconnect_min_s=0.5,
    reconnect_max_s=5.0,
    max_inflight=20,
    max_queued=100,
)


class FailingClient(AsyncMqttClient):
    """Its connection attempts raise `failures` in turn, then succeed."""

    def __init__(self, failures: list[BaseException]) -> None:
        self.waits: list[float] = []
        self.failures = failures
        self.attempts = 0
        super().__init__(SETTINGS, lambda message: None, sleep=self._record)

    async def _record(self, seconds: float) -> None:
        self.waits.append(float(seconds))

    async def _attempt(self) -> bool:
        self.attempts += 1
        if self.failures:
            raise self.failures.pop(0)
        return True


def refused() -> _Refused:
    return _Refused(ReasonCode(PacketTypes.CONNACK, "Not authorized"))


def test_reconnecting_waits_a_jittered_doubling_window_before_every_try(
    caplog: pytest.LogCaptureFixture,
) -> None:
    failures: list[BaseException] = [
        ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"),
        TimeoutError("no CONNACK from the broker"),
        refused(),
        ChannelError("the broker did not confirm the subscription"),
        ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"),
    ]

    async def scenario() -> FailingClient:
        client = FailingClient(failures)
        try:
            await client._reconnect()
        finally:
            await client.close()
        return client

    with caplog.at_level(logging.INFO, logger="modelferry.delivery.channels.mqtt.client"):
        client = asyncio.run(scenario())

    assert client.attempts == 6
    windows = [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]  # the first before the first try
    assert len(client.waits) == len(windows)
    assert all(0.0 <= w <= window for w, window in zip(client.waits, windows, strict=True))
    assert client.waits != windows
    assert caplog.text.count("reconnecting to the MQTT broker at broker.invalid:1883") == 4
    assert "Connection refused" in caplog.text
    assert "refused to reconnect: Not authorized" in caplog.text
    assert caplog.text.count("reconnected to the MQTT broker") == 1


def test_an_unexpected_error_ends_the_reconnect() -> None:
    async def scenario() -> FailingClient:
        client = FailingClient([ValueError("a bug")])
        try:
            with pytest.raises(ValueError, match="a bug"):
                await client._reconnect()
        finally:
            await client.close()
        return client

    client = asyncio.run(scenario())
    assert client.attempts == 1
    assert len(client.waits) == 1


def test_closing_during_a_wait_makes_no_further_try() -> None:
    async def scenario() -> FailingClient:
        client = FailingClient([])

        async def close_instead(seconds: float) -> None:
            client.waits.append(seconds)
            await client.close()

        client._sleep = close_instead
        await client._reconnect()
        return client

    client = asyncio.run(scenario())
    assert len(client.waits) == 1
    assert client.attempts == 0
