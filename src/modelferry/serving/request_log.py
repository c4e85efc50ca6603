"""The request log: one line per scoring request, on the `modelferry.requests` logger.

Every failed request is logged, and a sample of the successful ones
(`MODELFERRY_REQUEST_LOG_SAMPLE`, default 10 %): deployment, status, rows, latency and
request id. Never a body or a key: a log is read by more people than the data.
"""

from __future__ import annotations

import binascii
import logging
import random
import re
from collections.abc import Sequence

from modelferry.settings import load_settings

REQUEST_ID_HEADER = b"x-request-id"
# A client's request id is logged only if it cannot forge or break a log line.
_SAFE_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,64}")
request_log = logging.getLogger("modelferry.requests")


def request_log_sample() -> float:
    """The share of successful requests to log, from `MODELFERRY_REQUEST_LOG_SAMPLE`.

    Raises:
        InvalidConfigError: the variable is set to something other than a number in [0, 1].
    """
    return load_settings().request_log_sample


def request_id(headers: Sequence[tuple[bytes, bytes]]) -> bytes:
    """The request's id: the client's `x-request-id` when it is safe to log, else a new one.

    A safe id is 1 to 64 letters, digits or `._:-`: nothing that could forge or break a
    log line. The server answers with this id and logs it, so a client can quote it.
    Bytes, as the header carries it: the answer's header needs no encoding.
    """
    for name, value in headers:
        if name == REQUEST_ID_HEADER:
            if _SAFE_REQUEST_ID.fullmatch(value):
                return value
            break
    # 128 random bits (a uuid4 has 122) without a system call per request: an id must be
    # unique, not secret (a client may send any safe id of its own). `random` is seeded
    # from the OS and reseeded in a forked child, so two workers never share a sequence.
    return binascii.hexlify(random.getrandbits(128).to_bytes(16, "big"))


def log_request(request_id: str, deployment: str, status: int, rows: int, seconds: float) -> None:
    """Log one request: who answered, how, how fast, and its id (see `request_id`).

    5xx are warnings, the rest info.
    """
    request_log.log(
        logging.WARNING if status >= 500 else logging.INFO,
        "request deployment=%s status=%d rows=%d latency_ms=%.2f request_id=%s",
        deployment,
        status,
        rows,
        seconds * 1000,
        request_id,
        extra={
            "request_id": request_id,
            "deployment": deployment,
            "status": status,
            "rows": rows,
            "latency_ms": round(seconds * 1000, 2),
        },
    )
