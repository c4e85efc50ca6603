"""Reading device-supplied JSON within bounds.

Devices send any bytes. A body is refused before it is decoded when it is larger than
`MAX_BODY_BYTES` or nested deeper than `MAX_DEPTH` (the depth is counted without
recursion, so a body of a hundred thousand brackets cannot exhaust the stack), and when
it holds `NaN` or `Infinity`, which are not JSON and which a JSON column refuses.
Attributes that are kept are bounded to `MAX_ATTRIBUTES_BYTES` serialized: larger ones
are replaced by a marker saying so.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from modelferry.json_depth import nesting_depth

#: The largest message body read, in bytes.
MAX_BODY_BYTES = 1024 * 1024
#: The deepest nesting of arrays and objects accepted in a body.
MAX_DEPTH = 32
#: The largest attributes kept (serialized, in bytes); larger ones become a marker.
MAX_ATTRIBUTES_BYTES = 64 * 1024


class BodyError(ValueError):
    """A body that is not bounded, valid JSON (the message says what is wrong)."""


def _refuse_constant(name: str) -> Any:
    raise BodyError(f"{name} is not a JSON value")


def read_body(body: bytes) -> Any:
    """The JSON value of a body; `BodyError` when it is too large, too deep or not JSON."""
    if len(body) > MAX_BODY_BYTES:
        raise BodyError(f"the body is larger than {MAX_BODY_BYTES} bytes ({len(body)} bytes)")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BodyError(f"the body is not UTF-8: {exc}") from None
    depth = nesting_depth(body, stop_above=MAX_DEPTH)
    if depth > MAX_DEPTH:
        raise BodyError(f"the body is nested deeper than {MAX_DEPTH} levels ({depth})")
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except BodyError as exc:
        raise BodyError(f"the body is not valid JSON: {exc}") from None
    except (ValueError, RecursionError) as exc:
        raise BodyError(f"the body is not valid JSON: {str(exc)[:200]}") from None


def bounded_attributes(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    """Attributes as plain, valid JSON values within `MAX_ATTRIBUTES_BYTES`.

    Values JSON cannot hold become strings, `NaN` and infinities become null; attributes
    that are larger, or cannot be serialized at all, are replaced by a marker saying so.
    """
    try:
        text = json.dumps(dict(attributes or {}), default=str)
    except (ValueError, TypeError, RecursionError):
        return {"truncated": True, "note": "attributes could not be serialized as JSON"}
    if len(text.encode("utf-8")) > MAX_ATTRIBUTES_BYTES:
        return {
            "truncated": True,
            "note": f"attributes of {len(text)} characters exceed the {MAX_ATTRIBUTES_BYTES}-byte "
            "limit and were dropped",
        }
    # NaN and Infinity (which json.dumps writes as bare words) become null.
    result: dict[str, Any] = json.loads(text, parse_constant=lambda _: None)
    return result
