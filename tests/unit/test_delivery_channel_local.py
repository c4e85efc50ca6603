"""The in-process transport keeps the delivery contract."""

from __future__ import annotations

import pytest

from modelferry.delivery.local import LocalChannel, LocalDeviceTransport, LocalHub
from tests.delivery_contract import DeliveryTransportContract, Transports


class TestLocalTransportContract(DeliveryTransportContract):
    @pytest.fixture
    def transports(self) -> Transports:
        hub = LocalHub()
        return Transports(
            channel=lambda: LocalChannel(hub),
            device=lambda device_id: LocalDeviceTransport(device_id, hub),
        )
