"""Edge delivery: protocol messages, channels, delivery sessions and fleet rollout.

- `protocol`: the wire protocol (docs/protocol.md): messages, their bodies, delivery states.
- `channels`: the transports, the `DeliveryChannel`/`DeviceTransport` interfaces in
  `channels.base` and their implementations `local`, `mqtt` and `iothub`.
- `records`: the delivery record store (SQLAlchemy), and its writer for async code.
- `session`, `dispatcher`: one delivery to one device, and routing device messages to it.
- `plan`, `fleet`, `outcomes`, `fleet_chart`: a rollout to many devices and its results.

The public names are importable from here; each is imported on first use, so that the
edge agent does not pay for the record store's SQLAlchemy, and a command that only sends
over MQTT does not import the IoT Hub channel.
"""

from typing import TYPE_CHECKING

from modelferry.lazy_exports import lazy_exports

if TYPE_CHECKING:
    from modelferry.delivery.channels.base import DeliveryChannel, DeviceTransport
    from modelferry.delivery.channels.iothub.channel import IoTHubChannel, IoTHubDeviceTransport
    from modelferry.delivery.channels.local import LocalChannel, LocalDeviceTransport, LocalHub
    from modelferry.delivery.channels.mqtt.channel import (
        MqttBroker,
        MqttChannel,
        MqttDeviceTransport,
        MqttOptions,
    )
    from modelferry.delivery.fleet import FleetRollout
    from modelferry.delivery.outcomes import DeliveryOutcome, DeviceResult, FleetResult
    from modelferry.delivery.plan import DeliveryPlan, FleetPolicy
    from modelferry.delivery.protocol.messages import Message
    from modelferry.delivery.records.store import (
        DEFAULT_RECORDS_URL,
        DeliveryRecord,
        DeliveryRecords,
    )
    from modelferry.delivery.session import DeliveryRequest, DeliverySession, SessionTimeouts

_EXPORTS = {
    "DEFAULT_RECORDS_URL": "records.store",
    "DeliveryChannel": "channels.base",
    "DeliveryOutcome": "outcomes",
    "DeliveryPlan": "plan",
    "DeliveryRecord": "records.store",
    "DeliveryRecords": "records.store",
    "DeliveryRequest": "session",
    "DeliverySession": "session",
    "DeviceResult": "outcomes",
    "DeviceTransport": "channels.base",
    "FleetPolicy": "plan",
    "FleetResult": "outcomes",
    "FleetRollout": "fleet",
    "IoTHubChannel": "channels.iothub.channel",
    "IoTHubDeviceTransport": "channels.iothub.channel",
    "LocalChannel": "channels.local",
    "LocalDeviceTransport": "channels.local",
    "LocalHub": "channels.local",
    "Message": "protocol.messages",
    "MqttBroker": "channels.mqtt.channel",
    "MqttChannel": "channels.mqtt.channel",
    "MqttDeviceTransport": "channels.mqtt.channel",
    "MqttOptions": "channels.mqtt.channel",
    "SessionTimeouts": "session",
}

__all__ = [
    "DEFAULT_RECORDS_URL",
    "DeliveryChannel",
    "DeliveryOutcome",
    "DeliveryPlan",
    "DeliveryRecord",
    "DeliveryRecords",
    "DeliveryRequest",
    "DeliverySession",
    "DeviceResult",
    "DeviceTransport",
    "FleetPolicy",
    "FleetResult",
    "FleetRollout",
    "IoTHubChannel",
    "IoTHubDeviceTransport",
    "LocalChannel",
    "LocalDeviceTransport",
    "LocalHub",
    "Message",
    "MqttBroker",
    "MqttChannel",
    "MqttDeviceTransport",
    "MqttOptions",
    "SessionTimeouts",
]

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
