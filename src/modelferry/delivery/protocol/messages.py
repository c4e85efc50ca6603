"""The messages of the edge delivery protocol (AI Model Manager compatible).

A `Message` is what crosses a transport: string application properties, a UTF-8 JSON body
and the device it goes to (cloud-to-device) or came from (device-to-cloud). The builders
below make each message kind with exactly the property names and body fields of
docs/protocol.md; `parse` turns a received message back into a typed event, raising
`MalformedMessageError` (naming what is wrong) for anything that is not one.

    C2D newDelivery            type=event  kind=newDelivery
    D2C presignedUrlRequest    type=event  kind=presignedUrlRequest
    C2D presignedUrlResponse   type=data   kind=presignedUrlResponse
    D2C state                  type=state  (body.state: Success / Error terminal)
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any

from modelferry.delivery.protocol.body import BodyError, bounded_attributes, read_body
from modelferry.errors import MalformedMessageError

CONTENT_TYPE = "application/json"

TYPE_EVENT = "event"
TYPE_DATA = "data"
TYPE_STATE = "state"

KIND_NEW_DELIVERY = "newDelivery"
KIND_PRESIGNED_URL_REQUEST = "presignedUrlRequest"
KIND_PRESIGNED_URL_RESPONSE = "presignedUrlResponse"

STATE_SUCCESS = "Success"
STATE_ERROR = "Error"
TERMINAL_STATES = frozenset({STATE_SUCCESS, STATE_ERROR})

#: How far ahead of the receive time a device clock may run before its timestamp is
#: replaced by the receive time (a timestamp in the year 9999 would make every later
#: report look out of order).
CLOCK_SKEW = timedelta(seconds=60)


def utc_now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def format_timestamp(moment: datetime) -> str:
    """ISO-8601 UTC with milliseconds and a `Z`, as the protocol's `timestamp` fields."""
    if moment.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware")
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_timestamp(text: str) -> datetime:
    """Read an ISO-8601 timestamp; one without a zone is taken as UTC."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def new_event_id() -> str:
    """A fresh `eventId`."""
    return str(uuid.uuid4())


@dataclass(frozen=True)
class Message:
    """One protocol message as a transport carries it.

    `device_id` is the device the message goes to (C2D) or came from (D2C). `properties`
    are the application properties (strings). `body` is the UTF-8 JSON body.
    `enqueued_at` is when the transport accepted it, where the transport says so.
    """

    device_id: str
    properties: Mapping[str, str]
    body: bytes
    enqueued_at: datetime | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "properties", MappingProxyType(dict(self.properties)))

    @property
    def delivery_id(self) -> str | None:
        """The `deliveryId` property, or None when it is missing."""
        return self.properties.get("deliveryId")

    def json(self) -> dict[str, Any]:
        """The body as a JSON object; `MalformedMessageError` when it is not one."""
        try:
            value = read_body(self.body)
        except BodyError as exc:
            raise MalformedMessageError(
                f"message from/to {self.device_id!r} has a body that is not UTF-8 JSON: {exc}"
            ) from None
        if not isinstance(value, dict):
            raise MalformedMessageError(
                f"message from/to {self.device_id!r} has a JSON body that is not an object"
            )
        return value


def _encode(body: Mapping[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode("utf-8")


def new_delivery(
    device_id: str,
    *,
    delivery_id: str,
    project_id: str,
    package_id: str,
    package_version: str,
    event_id: str | None = None,
    now: datetime | None = None,
) -> Message:
    """C2D `newDelivery`: tells the device a package waits for it."""
    return Message(
        device_id=device_id,
        properties={
            "type": TYPE_EVENT,
            "kind": KIND_NEW_DELIVERY,
            "deliveryId": delivery_id,
            "projectId": project_id,
            "contentType": CONTENT_TYPE,
        },
        body=_encode(
            {
                "packageId": package_id,
                "packageVersion": package_version,
                "eventId": event_id or new_event_id(),
                "timestamp": format_timestamp(now or utc_now()),
            }
        ),
    )


def presigned_url_request(
    device_id: str,
    *,
    delivery_id: str,
    project_id: str,
    package_id: str,
    event_id: str | None = None,
    now: datetime | None = None,
) -> Message:
    """D2C `presignedUrlRequest`: the device asks for a download link."""
    return Message(
        device_id=device_id,
        properties={
            "type": TYPE_EVENT,
            "kind": KIND_PRESIGNED_URL_REQUEST,
            "deliveryId": delivery_id,
            "projectId": project_id,
        },
        body=_encode(
            {
                "timestamp": format_timestamp(now or utc_now()),
                "eventId": event_id or new_event_id(),
                "packageId": package_id,
            }
        ),
    )


def presigned_url_response(
    device_id: str,
    *,
    delivery_id: str,
    project_id: str,
    url: str,
    now: datetime | None = None,
) -> Message:
    """C2D `presignedUrlResponse`: a fresh read-only link to the package."""
    return Message(
        device_id=device_id,
        properties={
            "type": TYPE_DATA,
            "kind": KIND_PRESIGNED_URL_RESPONSE,
            "deliveryId": delivery_id,
            "projectId": project_id,
        },
        body=_encode(
            {"timestamp": format_timestamp(now or utc_now()), "attributes": {"presignedUrl": url}}
        ),
    )


def state_report(
    device_id: str,
    *,
    delivery_id: str,
    project_id: str,
    state: str,
    attributes: Mapping[str, Any] | None = None,
    now: datetime | None = None,
) -> Message:
    """D2C `state`: the device's progress; `Success` and `Error` are terminal."""
    return Message(
        device_id=device_id,
        properties={"type": TYPE_STATE, "deliveryId": delivery_id, "projectId": project_id},
        body=_encode(
            {
                "timestamp": format_timestamp(now or utc_now()),
                "attributes": dict(attributes or {}),
                "state": state,
            }
        ),
    )


@dataclass(frozen=True)
class NewDelivery:
    """A parsed C2D newDelivery."""

    device_id: str
    delivery_id: str
    project_id: str
    package_id: str
    package_version: str
    event_id: str
    timestamp: datetime


@dataclass(frozen=True)
class UrlRequest:
    """A parsed D2C presignedUrlRequest.

    `project_id`, `package_id` and `event_id` are None when the device left them out (the
    reference agent may); the request is then taken as one for the delivery's package.
    """

    device_id: str
    delivery_id: str
    project_id: str | None
    package_id: str | None
    event_id: str | None
    timestamp: datetime


@dataclass(frozen=True)
class UrlResponse:
    """A parsed C2D presignedUrlResponse."""

    device_id: str
    delivery_id: str
    project_id: str
    url: str
    timestamp: datetime


@dataclass(frozen=True)
class StateReport:
    """A parsed D2C state report (`project_id` is None when the device left it out)."""

    device_id: str
    delivery_id: str
    project_id: str | None
    state: str
    attributes: Mapping[str, Any]
    timestamp: datetime

    @property
    def terminal(self) -> bool:
        """True for `Success` and `Error`."""
        return self.state in TERMINAL_STATES


Event = NewDelivery | UrlRequest | UrlResponse | StateReport


def _prop(message: Message, name: str) -> str:
    value = message.properties.get(name)
    if not isinstance(value, str) or not value:
        raise MalformedMessageError(
            f"message from/to {message.device_id!r} lacks the {name!r} property "
            f"(properties: {sorted(message.properties)})"
        )
    return value


def _optional_prop(message: Message, name: str) -> str | None:
    """A property a device may leave out: None when missing or empty, else a string."""
    value = message.properties.get(name)
    return value if isinstance(value, str) and value else None


def _optional_field(message: Message, body: Mapping[str, Any], name: str) -> str | None:
    """A body string a device may leave out; present but not a string is malformed."""
    if body.get(name) in (None, ""):
        return None
    return str(_field(message, body, name, str))


def _field(message: Message, body: Mapping[str, Any], name: str, kind: type) -> Any:
    value = body.get(name)
    if not isinstance(value, kind) or (kind is str and not value):
        raise MalformedMessageError(
            f"message {message.properties.get('kind') or message.properties.get('type')!r} "
            f"from/to {message.device_id!r} has no valid {name!r} in its body "
            f"(expected {kind.__name__}, got {type(value).__name__})"
        )
    return value


def _timestamp(message: Message, body: Mapping[str, Any], *, required: bool = True) -> datetime:
    received = message.enqueued_at or utc_now()
    if not required and body.get("timestamp") in (None, ""):
        return received
    text = _field(message, body, "timestamp", str)
    try:
        moment = parse_timestamp(text)
    except (ValueError, OverflowError):
        raise MalformedMessageError(
            f"message from/to {message.device_id!r} has a timestamp that is not ISO-8601: "
            f"{text[:64]!r}"
        ) from None
    return received if moment > received + CLOCK_SKEW else moment


def parse(message: Message) -> Event:
    """The typed event a message carries; `MalformedMessageError` naming what is wrong.

    Strict for what the cloud sends (newDelivery, presignedUrlResponse); liberal for what
    devices send, as the reference agent does: a state report or presignedUrlRequest
    without `projectId` or `timestamp` (taken as the receive time), or a request without
    `eventId` or `packageId`, is still read.
    """
    message_type = _prop(message, "type")
    delivery_id = _prop(message, "deliveryId")
    device_project_id = _optional_prop(message, "projectId")
    body = message.json()
    if message_type == TYPE_STATE:
        attributes = body.get("attributes", {})
        if not isinstance(attributes, dict):
            raise MalformedMessageError(
                f"state from {message.device_id!r} has 'attributes' that is not an object"
            )
        return StateReport(
            device_id=message.device_id,
            delivery_id=delivery_id,
            project_id=device_project_id,
            state=_field(message, body, "state", str),
            attributes=bounded_attributes(attributes),
            timestamp=_timestamp(message, body, required=False),
        )
    kind = _prop(message, "kind")
    if message_type == TYPE_EVENT and kind == KIND_PRESIGNED_URL_REQUEST:
        return UrlRequest(
            device_id=message.device_id,
            delivery_id=delivery_id,
            project_id=device_project_id,
            package_id=_optional_field(message, body, "packageId"),
            event_id=_optional_field(message, body, "eventId"),
            timestamp=_timestamp(message, body, required=False),
        )
    project_id = _prop(message, "projectId")
    if message_type == TYPE_EVENT and kind == KIND_NEW_DELIVERY:
        return NewDelivery(
            device_id=message.device_id,
            delivery_id=delivery_id,
            project_id=project_id,
            package_id=_field(message, body, "packageId", str),
            package_version=_field(message, body, "packageVersion", str),
            event_id=_field(message, body, "eventId", str),
            timestamp=_timestamp(message, body),
        )
    if message_type == TYPE_DATA and kind == KIND_PRESIGNED_URL_RESPONSE:
        attributes = _field(message, body, "attributes", dict)
        url = attributes.get("presignedUrl")
        if not isinstance(url, str) or not url:
            raise MalformedMessageError(
                f"presignedUrlResponse to {message.device_id!r} has no attributes.presignedUrl"
            )
        return UrlResponse(
            device_id=message.device_id,
            delivery_id=delivery_id,
            project_id=project_id,
            url=url,
            timestamp=_timestamp(message, body),
        )
    raise MalformedMessageError(
        f"message from/to {message.device_id!r} has an unknown type/kind: {message_type!r}/{kind!r}"
    )
