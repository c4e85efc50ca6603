"""Azure IoT Hub in memory, for tests of delivery over IoT Hub without a hub.

`FakeIoTHub` serves the two Azure SDK clients `IoTHubChannel` uses (`hub.RegistryManager`
for `IoTHubRegistryManager`, `hub.ConsumerClient` for `EventHubConsumerClient`, with the
SDKs' signatures) and hands out device transports that see the hub as a device on its
MQTT endpoint does:

    from modelferry.testing.iothub import FakeIoTHub

    hub = FakeIoTHub()
    async with hub.channel() as channel, hub.device("press-7") as device:
        ...

Needs the `azure` extra (`pip install 'modelferry[azure]'`). Events are encoded with
azure-eventhub's own AMQP code, which is private to that SDK (`azure.eventhub._pyamqp`):
a new azure-eventhub release may need a change here, never in the product's packages.
"""

from typing import TYPE_CHECKING

from modelferry.lazy_exports import lazy_exports

if TYPE_CHECKING:
    from modelferry.testing.iothub.hub import FakeIoTHub, FakeIoTHubDevice

__all__ = ["FakeIoTHub", "FakeIoTHubDevice"]

__getattr__, __dir__ = lazy_exports(__name__, {"FakeIoTHub": "hub", "FakeIoTHubDevice": "hub"})
