"""IoT Hub's MQTT device topics and their property bags, shared by every MQTT-speaking side.

    C2D  devices/{deviceId}/messages/devicebound/{property_bag}
    D2C  devices/{deviceId}/messages/events/{property_bag}

A property bag is `key=value&key=value`, each key and value percent-encoded (UTF-8, no
character left unencoded but `-._~`), so `&`, `=`, `/`, spaces and non-ASCII text survive.
Keys starting with `$.` are IoT Hub's system properties (`$.mid`, `$.to`, `$.ct`, `$.ce`, ...;
IoT Hub itself writes them encoded as `%24.mid`) and `iothub-ack` asks for delivery
feedback: none of them is an application property. On the wire a message's content type
and encoding travel as `$.ct`/`$.ce`, as IoT Hub devices and the service SDK carry them, so
the protocol's `contentType` property becomes `$.ct` when sent and is not an application
property when received.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import quote, unquote

from modelferry.delivery.protocol.messages import CONTENT_TYPE

C2D_SEGMENT = "devicebound"
D2C_SEGMENT = "events"
CONTENT_ENCODING = "utf-8"

#: Properties the service SDK and IoT Hub carry as system properties, by bag key.
SYSTEM_FROM_PROPERTY = {"contentType": "$.ct", "contentEncoding": "$.ce"}
_SYSTEM_KEYS = frozenset({"iothub-ack"})
_FORBIDDEN_IN_DEVICE_ID = frozenset("/+#\0")


@dataclass(frozen=True)
class TopicMessage:
    """What a device topic says: whose it is, its application and system properties."""

    device_id: str
    properties: dict[str, str] = field(default_factory=dict)
    system: dict[str, str] = field(default_factory=dict)


def check_device_id(device_id: str) -> str:
    """The device id, if it can stand in a topic; `ValueError` naming the problem otherwise."""
    if not device_id or any(char in _FORBIDDEN_IN_DEVICE_ID for char in device_id):
        raise ValueError(
            f"device id {device_id!r} cannot be used in MQTT topics: it must be non-empty "
            "and free of '/', '+', '#'"
        )
    return device_id


def c2d_subscription(device_id: str) -> str:
    """The topic filter a device subscribes to for its C2D messages."""
    return f"devices/{check_device_id(device_id)}/messages/{C2D_SEGMENT}/#"


D2C_SUBSCRIPTION = f"devices/+/messages/{D2C_SEGMENT}/#"


def c2d_topic(device_id: str, properties: Mapping[str, str]) -> str:
    """The topic of a C2D message to `device_id` carrying `properties`.

    Both directions name the content type and encoding (`$.ct`, `$.ce`; JSON in UTF-8 unless
    the properties say otherwise), as IoT Hub devices and the service SDK do.
    """
    return _topic(device_id, C2D_SEGMENT, properties)


def d2c_topic(device_id: str, properties: Mapping[str, str]) -> str:
    """The topic of a D2C message from `device_id` carrying `properties`."""
    return _topic(device_id, D2C_SEGMENT, properties)


def _topic(device_id: str, segment: str, properties: Mapping[str, str]) -> str:
    bag = encode_property_bag(properties)
    return f"devices/{check_device_id(device_id)}/messages/{segment}/{bag}"


def encode_property_bag(properties: Mapping[str, str]) -> str:
    """`$.ct=...&$.ce=...&key=value...`: content type and encoding first, then the rest.

    Raises:
        ValueError: a property name is empty or starts with `$.` (reserved for the system).
    """
    system = {
        "$.ct": properties.get("contentType", CONTENT_TYPE),
        "$.ce": properties.get("contentEncoding", CONTENT_ENCODING),
    }
    pairs = [f"{key}={_quote(value)}" for key, value in system.items()]
    for key, value in properties.items():
        if key in SYSTEM_FROM_PROPERTY:
            continue
        if not key or key.startswith("$.") or key in _SYSTEM_KEYS:
            raise ValueError(f"property name {key!r} is reserved or empty")
        pairs.append(f"{_quote(key)}={_quote(value)}")
    return "&".join(pairs)


def _quote(text: str) -> str:
    return quote(text, safe="")


def decode_property_bag(bag: str) -> tuple[dict[str, str], dict[str, str]]:
    """Application and system properties of a bag; a key without `=` has an empty value.

    Raises:
        ValueError: a key or value is not percent-encoded UTF-8.
    """
    properties: dict[str, str] = {}
    system: dict[str, str] = {}
    for pair in bag.split("&"):
        if not pair:
            continue
        raw_key, _, raw_value = pair.partition("=")
        # `unquote`, not `unquote_plus`: IoT Hub and its SDKs leave `+` as it is.
        key = unquote(raw_key, errors="strict")
        value = unquote(raw_value, errors="strict")
        target = system if key.startswith("$.") or key in _SYSTEM_KEYS else properties
        target[key] = value
    return properties, system


def parse_topic(topic: str, segment: str) -> TopicMessage | None:
    """The device and properties of a `devices/{id}/messages/{segment}/...` topic.

    None when the topic is not one (another segment, no device id).

    Raises:
        ValueError: the property bag is not percent-encoded UTF-8.
    """
    parts = topic.split("/", 4)
    if len(parts) < 4 or parts[0] != "devices" or parts[2] != "messages" or parts[3] != segment:
        return None
    device_id = parts[1]
    if not device_id:
        return None
    properties, system = decode_property_bag(parts[4] if len(parts) == 5 else "")
    return TopicMessage(device_id=device_id, properties=properties, system=system)
