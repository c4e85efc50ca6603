"""JSON log lines: the bound ids, one line per record whatever it holds, per-task ids."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from modelferry.structured_logging import (
    JsonLogFormatter,
    bound_ids,
    configure_logging,
    log_context,
)

LOGGER = "modelferry.test.structured"


@pytest.fixture
def lines() -> Iterator[io.StringIO]:
    """Records of LOGGER as JSON lines in a buffer."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonLogFormatter())
    logger = logging.getLogger(LOGGER)
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)


def _records(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_record_is_one_json_object_with_the_bound_ids(lines: io.StringIO) -> None:
    with log_context(device_id="dev-001", delivery_id="d-42", package=None):
        logging.getLogger(LOGGER).warning("delivery %s failed", "d-42")
    (record,) = _records(lines)
    assert record["level"] == "WARNING"
    assert record["logger"] == LOGGER
    assert record["message"] == "delivery d-42 failed"
    assert record["device_id"] == "dev-001"
    assert record["delivery_id"] == "d-42"
    assert "package" not in record
    assert record["time"].endswith("+00:00")


def test_nested_contexts_add_ids_and_leaving_restores_them() -> None:
    with log_context(device_id="dev-1"):
        with log_context(delivery_id="d-1"):
            assert dict(bound_ids()) == {"device_id": "dev-1", "delivery_id": "d-1"}
        assert dict(bound_ids()) == {"device_id": "dev-1"}
    assert dict(bound_ids()) == {}


def test_concurrent_tasks_each_log_under_their_own_device(lines: io.StringIO) -> None:
    async def device(name: str) -> None:
        with log_context(device_id=name):
            for step in range(3):
                logging.getLogger(LOGGER).info("%s step %d", name, step)
                await asyncio.sleep(0)

    async def fleet() -> None:
        await asyncio.gather(*(device(f"dev-{i}") for i in range(5)))

    asyncio.run(fleet())
    records = _records(lines)
    assert len(records) == 15
    for record in records:
        assert record["message"].startswith(record["device_id"] + " ")


def test_newlines_and_hostile_text_cannot_forge_a_second_line(lines: io.StringIO) -> None:
    hostile = 'x"}\n{"level": "INFO", "message": "forged"}\r\n\x00'
    with log_context(device_id=hostile):
        logging.getLogger(LOGGER).info("got %s", hostile)
    assert len(lines.getvalue().splitlines()) == 1
    (record,) = _records(lines)
    assert record["device_id"] == hostile
    assert record["message"] == f"got {hostile}"


def test_odd_extra_values_never_lose_the_line(lines: io.StringIO) -> None:
    logger = logging.getLogger(LOGGER)
    logger.info("nan latency", extra={"latency_ms": float("nan"), "status": 200})
    logger.info("object id", extra={"request_id": object()})
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logger.exception("failed")
    nan, odd, failed = _records(lines)
    assert nan["latency_ms"] == "nan"
    assert nan["status"] == 200
    assert odd["request_id"].startswith("<object object")
    assert "RuntimeError: boom" in failed["exception"]


def test_configure_logging_sets_the_format_on_the_root_logger(
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    root.handlers.clear()  # as in a fresh process
    try:
        configure_logging(logging.INFO, "json")
        with log_context(device_id="dev-9"):
            logging.getLogger(LOGGER).info("json line")
        configure_logging(logging.INFO, "text")
        with log_context(device_id="dev-9"):
            logging.getLogger(LOGGER).info("text line")
        with pytest.raises(ValueError, match="use one of text, json"):
            configure_logging(logging.INFO, "xml")  # type: ignore[arg-type]
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    json_line, text_line = capsys.readouterr().err.splitlines()[-2:]
    assert json.loads(json_line)["device_id"] == "dev-9"
    assert text_line.endswith("text line device_id=dev-9")


def test_a_root_logger_configured_elsewhere_is_left_alone() -> None:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    theirs = logging.NullHandler()
    root.handlers[:] = [theirs]
    try:
        configure_logging(logging.DEBUG, "json")
        assert root.handlers == [theirs]
        assert root.level == saved[1]
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
