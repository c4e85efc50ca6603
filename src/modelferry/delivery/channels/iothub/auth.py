r"""Signing in to IoT Hub without its SDK: connection strings, SAS tokens, the MQTT username.

A device signs in to IoT Hub's MQTT endpoint (MQTT 3.1.1 over TLS on port 8883) with

    client id  {device_id}
    username   {hub}.azure-devices.net/{device_id}/?api-version=2021-04-12
    password   SharedAccessSignature sr={uri}&sig={signature}&se={expiry}

where `uri` is the percent-encoded `{hub}.azure-devices.net/devices/{device_id}`, `expiry`
seconds since the epoch, and `signature` the percent-encoded base64 HMAC-SHA256 of
`{uri}\n{expiry}` keyed with the base64-decoded device key. Errors never quote a key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass
from urllib.parse import quote

from pydantic import SecretStr

API_VERSION = "2021-04-12"


def parse_connection_string(text: str) -> dict[str, str]:
    """The `Name=value` pairs of a `;`-separated connection string (values may hold `=`).

    Raises:
        ValueError: a segment has no `=`; the message names its position, not its text.
    """
    pairs: dict[str, str] = {}
    for position, segment in enumerate(text.split(";"), start=1):
        if not segment.strip():
            continue
        name, separator, value = segment.partition("=")
        if not separator or not name.strip():
            raise ValueError(f"connection string segment {position} is not Name=value")
        pairs[name.strip()] = value.strip()
    return pairs


@dataclass(frozen=True)
class DeviceCredentials:
    """A device's identity on a hub and its symmetric key (a SAS-authenticated device)."""

    hostname: str
    device_id: str
    key: SecretStr
    gateway: str | None = None

    @classmethod
    def from_connection_string(cls, connection_string: str | SecretStr) -> DeviceCredentials:
        """Read `HostName=...;DeviceId=...;SharedAccessKey=...` (and `GatewayHostName`).

        Raises:
            ValueError: a part is missing or the key is not base64; the key is never quoted.
        """
        text = (
            connection_string.get_secret_value()
            if isinstance(connection_string, SecretStr)
            else connection_string
        )
        pairs = parse_connection_string(text)
        if pairs.get("x509", "").lower() == "true":
            raise ValueError("X.509 device authentication is not supported; use a SAS key")
        required = ("HostName", "DeviceId", "SharedAccessKey")
        missing = [name for name in required if not pairs.get(name)]
        if missing:
            raise ValueError(f"the device connection string lacks {', '.join(missing)}")
        key = pairs["SharedAccessKey"]
        _decode_key(key)
        return cls(
            hostname=pairs["HostName"],
            device_id=pairs["DeviceId"],
            key=SecretStr(key),
            gateway=pairs.get("GatewayHostName") or None,
        )

    @property
    def resource_uri(self) -> str:
        """What a device token grants access to."""
        return f"{self.hostname}/devices/{self.device_id}"

    def sas_token(self, expiry: int) -> str:
        """A device SAS token valid until `expiry` (seconds since the epoch)."""
        return sas_token(self.resource_uri, self.key, expiry)

    def mqtt_username(self, api_version: str = API_VERSION) -> str:
        """The MQTT username IoT Hub expects from this device."""
        return mqtt_username(self.hostname, self.device_id, api_version)


def sas_token(resource_uri: str, key: SecretStr, expiry: int, policy: str | None = None) -> str:
    """`SharedAccessSignature sr=...&sig=...&se=...[&skn=...]` for `resource_uri`.

    Raises:
        ValueError: the key is not base64.
    """
    encoded_uri = quote(resource_uri, safe="")
    to_sign = f"{encoded_uri}\n{expiry}".encode()
    digest = hmac.new(_decode_key(key.get_secret_value()), to_sign, hashlib.sha256).digest()
    signature = quote(base64.b64encode(digest).decode("ascii"), safe="")
    token = f"SharedAccessSignature sr={encoded_uri}&sig={signature}&se={expiry}"
    return f"{token}&skn={policy}" if policy else token


def mqtt_username(hostname: str, device_id: str, api_version: str = API_VERSION) -> str:
    """`{hostname}/{device_id}/?api-version={api_version}`."""
    return f"{hostname}/{device_id}/?api-version={api_version}"


def _decode_key(key: str) -> bytes:
    try:
        return base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the shared access key is not base64") from None
