"""The edge agent's retries: connecting, sending and a receiving stream that breaks.

A scripted transport fails on demand; the agent's sleep is injected and records each wait,
so the windows (doubling from `send_backoff`, capped at `send_max_backoff`) are checked
without waiting.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from modelferry.delivery.channels.base import DeviceTransport
from modelferry.delivery.protocol import messages as m
from modelferry.edge import AgentSettings, EdgeAgent
from modelferry.errors import ChannelError
from modelferry.packaging import SigningKey

KEY = SigningKey.from_base64(SecretStr(base64.b64encode(bytes(range(32))).decode()))
DEVICE = "edge-7"
SETTINGS = AgentSettings(send_backoff=0.5, send_max_backoff=30.0)
LINK = m.presigned_url_response(DEVICE, delivery_id="d-0", project_id="p-1", url="file:///x")


class ScriptedTransport(DeviceTransport):
    """Fails the first `open_failures` opens and `send_failures` sends.

    Each receive plays the next of `streams` (its messages, then a lost connection); with
    none left it waits until closed.
    """

    def __init__(
        self,
        *,
        open_failures: int = 0,
        send_failures: int = 0,
        streams: list[list[m.Message]] | None = None,
    ) -> None:
        self.device_id = DEVICE
        self.open_failures = open_failures
        self.send_failures = send_failures
        self.streams = list(streams or [])
        self.opens = 0
        self.sends = 0
        self.idle = asyncio.Event()
        self._closed = asyncio.Event()

    async def open(self) -> None:
        self.opens += 1
        if self.opens <= self.open_failures:
            raise ChannelError("broker unreachable")

    async def send(self, message: m.Message) -> None:
        self.sends += 1
        if self.sends <= self.send_failures:
            raise ChannelError("not acknowledged")

    async def receive(self) -> AsyncIterator[m.Message]:
        if self.streams:
            for message in self.streams.pop(0):
                yield message
            raise ChannelError("connection lost")
        self.idle.set()
        await self._closed.wait()

    async def close(self) -> None:
        self._closed.set()


class Waits:
    """The agent's sleep: records each wait and returns at once."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.seconds.append(float(seconds))
        await asyncio.sleep(0)


def within(waits: list[float], windows: list[float]) -> bool:
    return len(waits) == len(windows) and all(
        0.0 <= wait <= window for wait, window in zip(waits, windows, strict=True)
    )


async def run_until_idle(agent: EdgeAgent, transport: ScriptedTransport) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    await asyncio.wait_for(transport.idle.wait(), 10)
    stop.set()
    await asyncio.wait_for(task, 10)


def test_connecting_is_retried_in_a_jittered_doubling_window(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    transport = ScriptedTransport(open_failures=7)
    waits = Waits()
    agent = EdgeAgent(transport, tmp_path, [KEY.verify_key], SETTINGS, sleep=waits)

    with caplog.at_level(logging.WARNING):
        asyncio.run(run_until_idle(agent, transport))

    assert transport.opens == 8
    windows = [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0]
    assert within(waits.seconds, windows)
    assert waits.seconds != windows
    assert caplog.text.count("edge-7: cannot connect (broker unreachable); retrying in") == 7


def test_a_stop_cuts_a_connect_wait_short(tmp_path: Path) -> None:
    transport = ScriptedTransport(open_failures=10**9)
    settings = AgentSettings(send_backoff=10_000.0, send_max_backoff=10_000.0)
    agent = EdgeAgent(transport, tmp_path, [KEY.verify_key], settings)  # real sleeping

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(agent.run(stop))
        while transport.opens == 0:
            await asyncio.sleep(0.01)
        stop.set()
        await asyncio.wait_for(task, 5)

    asyncio.run(scenario())
    assert not agent.connected.is_set()


def test_a_broken_stream_is_reopened_and_a_stream_that_delivered_starts_afresh(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Two streams break at once, then six each deliver a message before they break.
    transport = ScriptedTransport(streams=[[], []] + [[LINK]] * 6)
    waits = Waits()
    agent = EdgeAgent(transport, tmp_path, [KEY.verify_key], SETTINGS, sleep=waits)

    with caplog.at_level(logging.WARNING):
        asyncio.run(run_until_idle(agent, transport))

    assert transport.opens == 1 + 8
    # Without the fresh start the last six windows would be 2, 4, 8, 16, 30, 30 s.
    assert within(waits.seconds, [0.5, 1.0] + [0.5] * 6)
    assert caplog.text.count("receiving failed (connection lost); reconnecting in") == 8


def test_a_send_with_few_attempts_is_dropped_after_them(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    transport = ScriptedTransport(send_failures=10)
    waits = Waits()
    agent = EdgeAgent(transport, tmp_path, [KEY.verify_key], SETTINGS, sleep=waits)

    with caplog.at_level(logging.WARNING):
        sent = asyncio.run(agent._send(LINK, attempts=3))

    assert sent is False
    assert transport.sends == 3
    assert within(waits.seconds, [0.5, 1.0])
    assert caplog.text.count("send failed (not acknowledged); retrying in") == 2
    assert "edge-7: dropped a message: not acknowledged" in caplog.text


def test_a_send_without_a_limit_is_retried_until_it_goes_out(tmp_path: Path) -> None:
    transport = ScriptedTransport(send_failures=9)
    waits = Waits()
    agent = EdgeAgent(transport, tmp_path, [KEY.verify_key], SETTINGS, sleep=waits)

    assert asyncio.run(agent._send(LINK)) is True
    assert transport.sends == 10
    assert within(waits.seconds, [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0])
