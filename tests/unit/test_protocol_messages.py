"""Protocol messages: the wire shape of docs/protocol.md, and clear errors for anything else."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from modelferry.delivery.protocol import body as b
from modelferry.delivery.protocol import messages as m
from modelferry.errors import MalformedMessageError

NOW = datetime(2026, 11, 22, 4, 30, 0, 123000, tzinfo=UTC)
IDS = {"delivery_id": "dlv-1", "project_id": "dev-bcc"}


def test_new_delivery_has_exact_properties_and_body() -> None:
    message = m.new_delivery(
        "edge-1", package_id="bcc", package_version="7", event_id="e1", now=NOW, **IDS
    )
    assert dict(message.properties) == {
        "type": "event",
        "kind": "newDelivery",
        "deliveryId": "dlv-1",
        "projectId": "dev-bcc",
        "contentType": "application/json",
    }
    assert json.loads(message.body) == {
        "packageId": "bcc",
        "packageVersion": "7",
        "eventId": "e1",
        "timestamp": "2026-11-22T04:30:00.123Z",
    }
    event = m.parse(message)
    assert isinstance(event, m.NewDelivery)
    assert (event.package_id, event.package_version, event.timestamp) == ("bcc", "7", NOW)


def test_url_request_response_and_state_round_trip() -> None:
    request = m.parse(m.presigned_url_request("edge-1", package_id="bcc", now=NOW, **IDS))
    assert isinstance(request, m.UrlRequest)
    assert request.package_id == "bcc"

    response = m.presigned_url_response("edge-1", url="https://x/y?sig=1", now=NOW, **IDS)
    assert dict(response.properties)["type"] == "data"
    assert json.loads(response.body)["attributes"] == {"presignedUrl": "https://x/y?sig=1"}
    parsed = m.parse(response)
    assert isinstance(parsed, m.UrlResponse)
    assert parsed.url == "https://x/y?sig=1"

    state = m.state_report(
        "edge-1", state="Downloading", attributes={"percent": 40}, now=NOW, **IDS
    )
    assert dict(state.properties) == {
        "type": "state",
        "deliveryId": "dlv-1",
        "projectId": "dev-bcc",
    }
    report = m.parse(state)
    assert isinstance(report, m.StateReport)
    assert (report.state, dict(report.attributes), report.terminal) == (
        "Downloading",
        {"percent": 40},
        False,
    )
    assert m.parse(m.state_report("edge-1", state="Error", **IDS)).terminal  # type: ignore[union-attr]


def test_properties_cannot_be_changed_after_building() -> None:
    message = m.state_report("edge-1", state="Success", **IDS)
    with pytest.raises(TypeError):
        message.properties["type"] = "event"  # type: ignore[index]


@pytest.mark.parametrize(
    ("properties", "body", "named"),
    [
        (
            {"type": "state", "projectId": "p"},
            b'{"state":"Success","timestamp":"2026-01-01T00:00:00Z"}',
            "deliveryId",
        ),
        ({"type": "state", "deliveryId": "d", "projectId": "p"}, b"not json", "not UTF-8 JSON"),
        ({"type": "state", "deliveryId": "d", "projectId": "p"}, b"[1, 2]", "not an object"),
        (
            {"type": "state", "deliveryId": "d", "projectId": "p"},
            b'{"timestamp":"2026-01-01T00:00:00Z"}',
            "'state'",
        ),
        (
            {"type": "state", "deliveryId": "d", "projectId": "p"},
            b'{"state":"Success","timestamp":"yesterday"}',
            "ISO-8601",
        ),
        (
            {"type": "event", "kind": "other", "deliveryId": "d", "projectId": "p"},
            b"{}",
            "unknown type/kind",
        ),
        (
            {"type": "data", "kind": "presignedUrlResponse", "deliveryId": "d", "projectId": "p"},
            b'{"timestamp":"2026-01-01T00:00:00Z","attributes":{}}',
            "presignedUrl",
        ),
        ({"type": "state", "deliveryId": "d", "projectId": "p"}, b"\xff\xfe", "not UTF-8"),
        (
            {"type": "event", "kind": "presignedUrlRequest", "deliveryId": "d"},
            b'{"packageId": 7}',
            "'packageId'",
        ),
        (
            {"type": "event", "kind": "newDelivery", "deliveryId": "d"},
            b'{"packageId":"p","packageVersion":"1","eventId":"e","timestamp":"2026-01-01T00:00:00Z"}',
            "projectId",
        ),
    ],
)
def test_malformed_messages_are_rejected_with_the_reason(
    properties: dict[str, str], body: bytes, named: str
) -> None:
    with pytest.raises(MalformedMessageError, match="edge-9") as caught:
        m.parse(m.Message(device_id="edge-9", properties=properties, body=body))
    assert named in str(caught.value)


def test_timestamps_are_utc_with_z_and_naive_ones_are_refused() -> None:
    assert m.format_timestamp(NOW) == "2026-11-22T04:30:00.123Z"
    assert m.parse_timestamp("2026-11-22T04:30:00") == datetime(2026, 11, 22, 4, 30, tzinfo=UTC)
    with pytest.raises(ValueError, match="timezone-aware"):
        m.format_timestamp(datetime(2026, 1, 1))


def _state_body(device: str, body: bytes) -> m.Message:
    props = {"type": m.TYPE_STATE, "deliveryId": "d-1", "projectId": "prod-bc"}
    return m.Message(device_id=device, properties=props, body=body)


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000 + b"]" * 100_000,
        b'{"state":"Received","timestamp":"2026-11-01T12:00:00Z","attributes":'
        + b'{"a":' * 5_000
        + b"1"
        + b"}" * 5_000
        + b"}",
    ],
    ids=["deep-array", "deep-attributes"],
)
def test_an_over_deep_body_is_a_malformed_message_not_a_recursion_error(body: bytes) -> None:
    with pytest.raises(MalformedMessageError, match="nested deeper than"):
        m.parse(_state_body("dev-1", body))


def test_an_oversized_body_is_a_malformed_message() -> None:
    body = json.dumps({"state": "Received", "pad": "x" * (b.MAX_BODY_BYTES + 1)}).encode()
    with pytest.raises(MalformedMessageError, match="larger than"):
        m.parse(_state_body("dev-1", body))


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_a_malformed_message(constant: str) -> None:
    body = (
        '{"state":"Downloading","timestamp":"2026-11-01T12:00:00Z",'
        f'"attributes":{{"bytes":{constant}}}}}'
    ).encode()
    with pytest.raises(MalformedMessageError, match="not valid JSON"):
        m.parse(_state_body("dev-1", body))


def test_attributes_over_the_size_limit_are_replaced_by_a_marker() -> None:
    big = {"log": "x" * (b.MAX_ATTRIBUTES_BYTES + 10), "progress": 50}
    message = m.state_report("dev-1", delivery_id="d-1", project_id="p", state="Downloading",
                             attributes=big)  # fmt: skip
    event = m.parse(message)
    assert isinstance(event, m.StateReport)
    assert event.attributes["truncated"] is True
    assert "log" not in event.attributes
    assert len(json.dumps(dict(event.attributes))) < 1_000


def test_a_device_timestamp_in_the_future_is_clamped_to_the_receive_time() -> None:
    far = datetime(9999, 12, 31, tzinfo=UTC)
    message = m.state_report("dev-1", delivery_id="d-1", project_id="p", state="Received", now=far)
    before = datetime.now(UTC)
    event = m.parse(message)
    after = datetime.now(UTC)
    assert before <= event.timestamp <= after + m.CLOCK_SKEW
    assert event.timestamp <= after + m.CLOCK_SKEW


def test_device_messages_may_leave_out_project_timestamp_event_and_package() -> None:
    # Liberal in what we accept from devices (docs/protocol.md, "What a receiver accepts").
    received = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    request = m.parse(
        m.Message(
            device_id="edge-9",
            properties={"type": "event", "kind": "presignedUrlRequest", "deliveryId": "d"},
            body=b"{}",
            enqueued_at=received,
        )
    )
    assert isinstance(request, m.UrlRequest)
    assert (request.project_id, request.package_id, request.event_id) == (None, None, None)
    assert request.timestamp == received

    state = m.parse(
        m.Message(
            device_id="edge-9",
            properties={"type": "state", "deliveryId": "d", "projectId": ""},
            body=b'{"state": "Received"}',
            enqueued_at=received,
        )
    )
    assert isinstance(state, m.StateReport)
    assert (state.project_id, state.state, state.timestamp) == (None, "Received", received)
