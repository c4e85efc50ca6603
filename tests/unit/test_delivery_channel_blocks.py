"""The delivery channel blocks build channels and keep their secrets secret."""

from __future__ import annotations

import pytest
from pydantic import SecretStr, ValidationError

from blocks.delivery_channel import IoTHubDeliveryChannel, MqttDeliveryChannel
from modelferry.delivery.channels.iothub.channel import IoTHubChannel
from modelferry.delivery.channels.mqtt.channel import MqttChannel

SERVICE = "HostName=hub.azure-devices.net;SharedAccessKeyName=service;SharedAccessKey=c2Vydg=="
EVENTS = (
    "Endpoint=sb://ihsu.servicebus.windows.net/;SharedAccessKeyName=service;"
    "SharedAccessKey=ZXZlbnQ=;EntityPath=hub"
)
SECRETS = ("mq-pass-77", "c2Vydg==", "ZXZlbnQ=")


def shown(block: object) -> list[str]:
    assert hasattr(block, "model_dump_json")
    return [repr(block), str(block), block.model_dump_json(), repr(block.model_dump())]


def test_mqtt_block_hides_the_password_and_builds_the_channel() -> None:
    block = MqttDeliveryChannel(
        host="mq.example.com",
        port=8883,
        username="cloud",
        password="mq-pass-77",
        tls=True,
        client_id="cloud-a",
    )
    for text in shown(block):
        assert "mq-pass-77" not in text
    channel = block.get_channel()
    assert isinstance(channel, MqttChannel)
    assert channel.client_id == "cloud-a"
    assert channel.broker.credentials() == ("cloud", "mq-pass-77")
    assert channel.broker.uses_tls
    assert "mq-pass-77" not in repr(channel)


def test_iothub_block_hides_both_connection_strings_and_builds_the_channel() -> None:
    block = IoTHubDeliveryChannel(
        service_connection_string=SERVICE,
        eventhub_connection_string=EVENTS,
        consumer_group="modelferry",
    )
    for text in shown(block):
        for secret in SECRETS[1:]:
            assert secret not in text
    channel = block.get_channel()
    assert isinstance(channel, IoTHubChannel)
    assert (channel.hostname, channel.consumer_group) == ("hub.azure-devices.net", "modelferry")
    for secret in SECRETS[1:]:
        assert secret not in repr(channel)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"password": "mq-pass-77"}, "needs a username"),
        ({"port": 0}, "not a TCP port"),
        ({"client_id": ""}, "client_id"),
    ],
)
def test_mqtt_block_rejects_bad_settings_without_echoing_them(
    fields: dict[str, object], message: str
) -> None:
    with pytest.raises(ValidationError, match=message) as info:
        MqttDeliveryChannel(**fields)  # type: ignore[arg-type]
    assert "mq-pass-77" not in str(info.value)


@pytest.mark.parametrize(
    ("service", "events", "message"),
    [
        ("HostName=hub.azure-devices.net;SharedAccessKey=c2Vydg==", EVENTS, "SharedAccessKeyName"),
        (SERVICE, EVENTS.replace("sb://", "https://"), "Endpoint=sb://"),
        (SERVICE, EVENTS.replace(";EntityPath=hub", ""), "eventhub_name"),
        ("garbage;SharedAccessKey=c2Vydg==", EVENTS, "segment 1"),
    ],
)
def test_iothub_block_rejects_bad_connection_strings_without_echoing_them(
    service: str, events: str, message: str
) -> None:
    with pytest.raises(ValidationError, match=message) as info:
        IoTHubDeliveryChannel(
            service_connection_string=SecretStr(service), eventhub_connection_string=events
        )
    for secret in SECRETS[1:]:
        assert secret not in str(info.value)
