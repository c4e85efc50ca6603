"""Prefect blocks: which delivery channel reaches the edge devices, and its credentials."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, SecretStr, model_validator

from blocks.base import DeliveryChannelBlock
from modelferry.delivery.channels.base import DeliveryChannel
from modelferry.delivery.channels.iothub.auth import parse_connection_string
from modelferry.delivery.channels.iothub.channel import IoTHubChannel
from modelferry.delivery.channels.mqtt.channel import (
    DEFAULT_CLOUD_CLIENT_ID,
    MqttBroker,
    MqttChannel,
)


class MqttDeliveryChannel(DeliveryChannelBlock):
    """An MQTT broker (Mosquitto or another) that edge devices and modelferry share.

    Devices use IoT Hub's topics on it (`devices/{id}/messages/...`):

        MqttDeliveryChannel(host="mqtt.example.com", port=8883, tls=True,
                            username="modelferry", password="...").save("factory-broker")
    """

    _block_type_name = "modelferry MQTT Delivery Channel"
    _block_type_slug = "modelferry-mqtt-delivery-channel"
    _description = "MQTT broker through which modelferry delivers models to edge devices."
    # A validation error would otherwise echo the raw input, password included.
    model_config = ConfigDict(hide_input_in_errors=True)

    host: str = Field(default="127.0.0.1", description="Broker host name or address.")
    port: int = Field(default=1883, description="Broker port (8883 is usual with TLS).")
    username: str | None = Field(default=None, description="Broker user name.")
    password: SecretStr | None = Field(default=None, description="Broker password.")
    tls: bool = Field(default=False, description="Connect with TLS (on when a CA file is set).")
    ca_file: str | None = Field(
        default=None, description="CA certificate file that signed the broker's certificate."
    )
    client_id: str = Field(
        default=DEFAULT_CLOUD_CLIENT_ID,
        description="Client id of the cloud side's persistent session; one per channel open "
        "at the same time.",
    )
    protocol: Literal["5", "3.1.1"] = Field(default="5", description="MQTT protocol version.")

    @model_validator(mode="after")
    def _consistent(self) -> MqttDeliveryChannel:
        if self.password is not None and not self.username:
            raise ValueError("a password needs a username")
        if not 0 < self.port < 65536:
            raise ValueError(f"port {self.port} is not a TCP port")
        if not self.client_id:
            raise ValueError("client_id must not be empty")
        return self

    def get_broker(self) -> MqttBroker:
        """The broker settings; the password stays wrapped until a connection is made."""
        return MqttBroker(
            host=self.host,
            port=self.port,
            username=self.username,
            password=self.password,
            tls=self.tls,
            ca_file=self.ca_file,
            protocol=self.protocol,
        )

    def get_channel(self) -> DeliveryChannel:
        """The cloud side of the delivery protocol on this broker (not yet open)."""
        return MqttChannel(self.get_broker(), client_id=self.client_id)


class IoTHubDeliveryChannel(DeliveryChannelBlock):
    """An Azure IoT hub whose devices modelferry delivers models to.

    Needs `pip install 'modelferry[azure]'`. The service connection string is a shared
    access policy with ServiceConnect (e.g. `service`); the Event Hub-compatible one is on
    the hub's Built-in endpoints page:

        IoTHubDeliveryChannel(service_connection_string="HostName=...;SharedAccessKey...",
                              eventhub_connection_string="Endpoint=sb://...;EntityPath=...",
                              consumer_group="modelferry").save("production-hub")
    """

    _block_type_name = "modelferry IoT Hub Delivery Channel"
    _block_type_slug = "modelferry-iothub-delivery-channel"
    _description = "Azure IoT Hub through which modelferry delivers models to edge devices."
    model_config = ConfigDict(hide_input_in_errors=True)

    service_connection_string: SecretStr = Field(
        description="IoT Hub connection string of a policy with ServiceConnect."
    )
    eventhub_connection_string: SecretStr = Field(
        description="The hub's Event Hub-compatible endpoint connection string."
    )
    consumer_group: str = Field(
        default="$Default",
        description="Consumer group of the built-in endpoint, not shared with other readers.",
    )
    eventhub_name: str | None = Field(
        default=None, description="Event Hub-compatible name, when not in the connection string."
    )

    @model_validator(mode="after")
    def _connection_strings_look_right(self) -> IoTHubDeliveryChannel:
        try:
            service = parse_connection_string(self.service_connection_string.get_secret_value())
            events = parse_connection_string(self.eventhub_connection_string.get_secret_value())
        except ValueError as exc:
            raise ValueError(str(exc)) from None
        missing = [
            k for k in ("HostName", "SharedAccessKeyName", "SharedAccessKey") if not service.get(k)
        ]
        if missing:
            raise ValueError(f"service_connection_string lacks {', '.join(missing)}")
        if not events.get("Endpoint", "").startswith("sb://"):
            raise ValueError("eventhub_connection_string must start with Endpoint=sb://...")
        if not events.get("EntityPath") and not self.eventhub_name:
            raise ValueError("eventhub_connection_string has no EntityPath: set eventhub_name")
        return self

    def get_channel(self) -> DeliveryChannel:
        """The cloud side of the delivery protocol on this hub (not yet open)."""
        return IoTHubChannel(
            self.service_connection_string,
            self.eventhub_connection_string,
            consumer_group=self.consumer_group,
            eventhub_name=self.eventhub_name,
        )
