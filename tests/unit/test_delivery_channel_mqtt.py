"""MQTT topics and property bags, broker settings, and signing in to IoT Hub's MQTT endpoint
(no broker needed: the transports themselves run against Mosquitto in tests/integration)."""

from __future__ import annotations

import base64
import ssl
from datetime import timedelta

import pytest
from paho.mqtt.enums import MQTTProtocolVersion
from pydantic import SecretStr

from modelferry.delivery.channels.iothub.auth import DeviceCredentials, mqtt_username, sas_token
from modelferry.delivery.channels.iothub.channel import IoTHubDeviceTransport
from modelferry.delivery.channels.mqtt.channel import (
    MqttBroker,
    MqttChannel,
    MqttDeviceTransport,
    MqttOptions,
)
from modelferry.delivery.channels.mqtt.topics import (
    C2D_SEGMENT,
    D2C_SEGMENT,
    c2d_subscription,
    c2d_topic,
    d2c_topic,
    decode_property_bag,
    encode_property_bag,
    parse_topic,
)
from modelferry.errors import ChannelError

KEY = base64.b64encode(b"secret-device-key-0123456789abcdef").decode()
CONNECTION_STRING = f"HostName=myhub.azure-devices.net;DeviceId=press-7;SharedAccessKey={KEY}"


def test_d2c_topic_writes_content_type_and_encodes_every_reserved_character() -> None:
    topic = d2c_topic("press-7", {"type": "state", "deliveryId": "a&b=c/d e", "note": "ü+%"})
    assert topic == (
        "devices/press-7/messages/events/"
        "$.ct=application%2Fjson&$.ce=utf-8&type=state&deliveryId=a%26b%3Dc%2Fd%20e"
        "&note=%C3%BC%2B%25"
    )


def test_content_type_property_travels_as_system_property() -> None:
    topic = c2d_topic("press-7", {"type": "event", "contentType": "application/json"})
    assert (
        topic
        == "devices/press-7/messages/devicebound/$.ct=application%2Fjson&$.ce=utf-8&type=event"
    )
    parsed = parse_topic(topic, C2D_SEGMENT)
    assert parsed is not None
    assert parsed.properties == {"type": "event"}
    assert parsed.system == {"$.ct": "application/json", "$.ce": "utf-8"}


def test_iot_hub_c2d_topic_with_its_encoded_system_properties_is_read() -> None:
    # As IoT Hub renders a C2D message for an MQTT device.
    topic = (
        "devices/press-7/messages/devicebound/%24.mid=6b1f&%24.to=%2Fdevices%2Fpress-7%2Fmessages"
        "%2FdeviceBound&%24.ct=application%2Fjson&%24.ce=utf-8&iothub-ack=full"
        "&type=event&kind=newDelivery&deliveryId=d-1&projectId=p-1"
    )
    parsed = parse_topic(topic, C2D_SEGMENT)
    assert parsed is not None
    assert parsed.device_id == "press-7"
    assert parsed.properties == {
        "type": "event",
        "kind": "newDelivery",
        "deliveryId": "d-1",
        "projectId": "p-1",
    }
    assert parsed.system["$.to"] == "/devices/press-7/messages/deviceBound"
    assert parsed.system["iothub-ack"] == "full"


@pytest.mark.parametrize(
    "value", ["plain", "a&b=c", "/ slashes / and spaces ", "ü-проект-✓", "+%2B", "=", ""]
)
def test_property_bags_round_trip(value: str) -> None:
    properties = {"deliveryId": value, "k&=/ ü": "v"}
    decoded, system = decode_property_bag(encode_property_bag(properties))
    assert decoded == properties
    assert set(system) == {"$.ct", "$.ce"}


def test_plus_stays_a_plus_and_a_bare_key_is_empty() -> None:
    assert decode_property_bag("a=1+2&flag&&b=%20") == ({"a": "1+2", "flag": "", "b": " "}, {})


def test_reserved_property_names_are_refused() -> None:
    for name in ("$.mid", "", "iothub-ack"):
        with pytest.raises(ValueError, match="reserved or empty"):
            encode_property_bag({name: "x"})


def test_undecodable_bags_raise() -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - UnicodeDecodeError, a ValueError
        decode_property_bag("deliveryId=%FF%FE")


@pytest.mark.parametrize(
    ("topic", "segment"),
    [
        ("devices/press-7/messages/devicebound/type=event", D2C_SEGMENT),
        ("devices//messages/events/type=state", D2C_SEGMENT),
        ("telemetry/press-7", D2C_SEGMENT),
        ("devices/press-7/twin/res", C2D_SEGMENT),
    ],
)
def test_topics_of_other_kinds_are_not_messages(topic: str, segment: str) -> None:
    assert parse_topic(topic, segment) is None


def test_topic_without_bag_has_no_properties() -> None:
    parsed = parse_topic("devices/press-7/messages/events", D2C_SEGMENT)
    assert parsed is not None
    assert (parsed.device_id, parsed.properties) == ("press-7", {})


@pytest.mark.parametrize("device_id", ["", "a/b", "a+", "#", "x\0"])
def test_device_ids_that_break_topics_are_refused(device_id: str) -> None:
    with pytest.raises(ValueError, match="cannot be used in MQTT topics"):
        c2d_subscription(device_id)
    with pytest.raises(ValueError, match="cannot be used in MQTT topics"):
        MqttDeviceTransport(device_id)


def test_broker_hides_its_password_and_checks_its_settings() -> None:
    broker = MqttBroker("mq.example.com", 8883, username="cloud", password=SecretStr("pw-123"))
    assert "pw-123" not in repr(broker)
    assert "pw-123" not in repr(MqttChannel(broker))
    assert broker.credentials() == ("cloud", "pw-123")
    assert broker.ssl_context() is None
    with pytest.raises(ValueError, match="not a TCP port"):
        MqttBroker(port=0)
    with pytest.raises(ValueError, match="needs a username"):
        MqttBroker(password=SecretStr("x"), protocol="3.1.1")


def test_a_ca_file_turns_tls_on_and_a_missing_one_is_a_channel_error() -> None:
    context = MqttBroker(tls=True).ssl_context()
    assert context is not None
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    broker = MqttBroker(ca_file="/nonexistent/ca.pem")
    assert broker.uses_tls
    with pytest.raises(ChannelError, match="cannot load the CA file"):
        broker.ssl_context()


def test_sas_token_matches_a_vector_computed_by_hand() -> None:
    # resource URI, percent-encoded:  myhub.azure-devices.net%2Fdevices%2Fpress-7
    # string to sign:                 "<that>\n1800000000"
    # HMAC-SHA256 with the decoded key, base64 (computed apart with openssl):
    #                                 x2Y/FkE664JgjbyitqkOWmCxqq2SA/2PwkeVDTGoDzU=
    expected = (
        "SharedAccessSignature sr=myhub.azure-devices.net%2Fdevices%2Fpress-7"
        "&sig=x2Y%2FFkE664JgjbyitqkOWmCxqq2SA%2F2PwkeVDTGoDzU%3D&se=1800000000"
    )
    credentials = DeviceCredentials.from_connection_string(CONNECTION_STRING)
    assert credentials.sas_token(1800000000) == expected
    assert sas_token("myhub.azure-devices.net/devices/press-7", SecretStr(KEY), 1800000000) == (
        expected
    )
    assert sas_token("myhub.azure-devices.net", SecretStr(KEY), 1, policy="service").endswith(
        "&se=1&skn=service"
    )


def test_mqtt_username_for_iot_hub() -> None:
    assert mqtt_username("myhub.azure-devices.net", "press-7") == (
        "myhub.azure-devices.net/press-7/?api-version=2021-04-12"
    )


def test_iot_hub_device_transport_signs_in_as_iot_hub_expects() -> None:
    transport = IoTHubDeviceTransport.from_connection_string(
        SecretStr(CONNECTION_STRING), token_ttl=timedelta(minutes=10)
    )
    assert transport.device_id == "press-7"
    settings = transport._settings()
    assert (settings.host, settings.port, settings.client_id) == (
        "myhub.azure-devices.net",
        8883,
        "press-7",
    )
    assert settings.protocol == MQTTProtocolVersion.MQTTv311
    assert settings.tls is not None
    assert settings.tls.verify_mode == ssl.CERT_REQUIRED
    username, password = transport.sign_in(now=1799999400)
    assert username == "myhub.azure-devices.net/press-7/?api-version=2021-04-12"
    assert password == DeviceCredentials.from_connection_string(CONNECTION_STRING).sas_token(
        1800000000
    )
    assert KEY not in repr(transport)
    # Every connection attempt asks for credentials again: a fresh token each time.
    assert settings.credentials()[1] != password


def test_a_gateway_host_name_is_where_the_device_connects() -> None:
    transport = IoTHubDeviceTransport.from_connection_string(
        CONNECTION_STRING + ";GatewayHostName=edge-gw.local", ca_file=None
    )
    assert transport.broker.host == "edge-gw.local"
    assert transport.sign_in()[0].startswith("myhub.azure-devices.net/press-7/")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("HostName=h;DeviceId=d", "lacks SharedAccessKey"),
        (f"DeviceId=d;SharedAccessKey={KEY}", "lacks HostName"),
        ("HostName=h;DeviceId=d;SharedAccessKey=not base64!", "not base64"),
        ("HostName=h;DeviceId=d;x509=true", "X.509"),
        ("HostName=h;garbage;SharedAccessKey=abc", "segment 2"),
    ],
)
def test_bad_device_connection_strings_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        DeviceCredentials.from_connection_string(text)
    assert "not base64!" not in str(info.value)
    assert KEY not in str(info.value)


def test_options_have_sane_defaults() -> None:
    options = MqttOptions()
    assert options.reconnect_min_s < options.reconnect_max_s
    assert options.session_expiry_s > 0
    assert MqttChannel().client_id == "modelferry-cloud"
    with pytest.raises(ValueError, match="client id"):
        MqttChannel(client_id="")
