"""The in-process transport keeps the delivery contract."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from modelferry.delivery.channels.local import LocalChannel, LocalDeviceTransport, LocalHub
from modelferry.errors import ChannelError
from modelferry.testing.contracts.delivery import DeliveryTransportContract, Transports


class TestLocalTransportContract(DeliveryTransportContract):
    @pytest.fixture
    def transports(self) -> Transports:
        hub = LocalHub()
        return Transports(
            channel=lambda: LocalChannel(hub),
            device=lambda device_id: LocalDeviceTransport(device_id, hub),
        )

    def test_open_raises_channel_error_when_nothing_answers(
        self, transports: Transports, device_id: Callable[[str], str]
    ) -> None:
        """In-process, nothing can be unreachable; what `open()` refuses is a device id
        already connected to the hub, with a ChannelError naming it."""
        first = transports.device(device_id("a"))
        second = transports.device(device_id("a"))

        async def scenario() -> None:
            await first.open()
            with pytest.raises(ChannelError, match="already connected"):
                await second.open()
            await first.close()
            await second.open()  # the id is free again once the first one closed
            await second.close()

        asyncio.run(scenario())
