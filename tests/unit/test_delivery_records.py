"""The delivery record store, on SQLite and on the real PostgreSQL server."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from modelferry.delivery.protocol.states import (
    ERROR,
    NOTIFIED,
    PENDING,
    SKIPPED,
    SUCCESS,
    TIMED_OUT,
)
from modelferry.delivery.records.store import DeliveryRecord, DeliveryRecords
from modelferry.delivery.records.writer import AsyncDeliveryRecords
from modelferry.errors import DeliveryError

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)],
)
def records(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DeliveryRecords]:
    """A fresh record store: SQLite in tmp_path, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'nested' / 'deliveries.db'}"
    else:
        url = request.getfixturevalue("postgres_database")
    store = DeliveryRecords(url)
    try:
        yield store
    finally:
        store.close()


def fields(delivery_id: str, device: str = "dev-1", **changes: Any) -> dict[str, Any]:
    """The fields of a delivery of bc-edge 1.0.0, with test defaults."""
    values: dict[str, Any] = {
        "delivery_id": delivery_id,
        "device_id": device,
        "project_id": "prod-bc",
        "package_id": "bc-edge",
        "package_version": "1.0.0",
        "model_name": "bc",
        "model_version": "3",
        "rollout_id": "r1",
        "at": T0,
    }
    values.update(changes)
    return values


def create(
    records: DeliveryRecords, delivery_id: str, device: str = "dev-1", **changes: Any
) -> DeliveryRecord:
    """Record a delivery of bc-edge 1.0.0 with test defaults."""
    return records.create(**fields(delivery_id, device, **changes))


def test_a_delivery_records_each_transition_with_its_time(records: DeliveryRecords) -> None:
    created = create(records, "d1")
    assert created.state == PENDING
    assert records.transition("d1", NOTIFIED, at=T0 + timedelta(seconds=1))
    assert records.transition(
        "d1",
        "Downloading",
        at=T0 + timedelta(seconds=2),
        reported_at=T0 + timedelta(seconds=1.5),
        attributes={"progress": 40},
    )
    assert records.transition("d1", SUCCESS, at=T0 + timedelta(seconds=3))

    found = records.get("d1")
    assert found is not None
    assert (found.state, found.attempt, found.error) == (SUCCESS, 1, None)
    assert found.created_at == T0
    assert found.updated_at == found.ended_at == T0 + timedelta(seconds=3)
    assert found.final
    steps = records.transitions("d1")
    assert [(t.state, t.at) for t in steps] == [
        (PENDING, T0),
        (NOTIFIED, T0 + timedelta(seconds=1)),
        ("Downloading", T0 + timedelta(seconds=2)),
        (SUCCESS, T0 + timedelta(seconds=3)),
    ]
    assert steps[2].attributes == {"progress": 40}
    assert steps[2].reported_at == T0 + timedelta(seconds=1.5)
    assert not any(t.ignored for t in steps)
    assert records.get("missing") is None


def test_a_final_state_is_final_and_later_ones_are_recorded_as_ignored(
    records: DeliveryRecords,
) -> None:
    create(records, "d1")
    assert records.transition("d1", SUCCESS, at=T0 + timedelta(seconds=5))

    assert not records.transition("d1", SUCCESS, at=T0 + timedelta(seconds=6))
    assert not records.transition("d1", ERROR, error="contradiction", at=T0 + timedelta(seconds=7))
    assert not records.transition("d1", "Installing", at=T0 + timedelta(seconds=8))

    found = records.get("d1")
    assert found is not None
    assert (found.state, found.error, found.ended_at) == (SUCCESS, None, T0 + timedelta(seconds=5))
    steps = records.transitions("d1")
    assert [(t.state, t.ignored) for t in steps] == [
        (PENDING, False),
        (SUCCESS, False),
        (SUCCESS, True),
        (ERROR, True),
        ("Installing", True),
    ]
    assert all(t.note == "delivery had already ended as Success" for t in steps[2:])
    # Counted once: one Success, one installed row.
    assert sum(1 for t in steps if t.state == SUCCESS and not t.ignored) == 1
    assert len(records.installed()) == 1


def test_timed_out_is_final_too(records: DeliveryRecords) -> None:
    create(records, "d1")
    assert records.transition("d1", TIMED_OUT, error="device went quiet")
    assert not records.transition("d1", SUCCESS)
    found = records.get("d1")
    assert found is not None
    assert (found.state, found.error) == (TIMED_OUT, "device went quiet")
    assert records.installed() == []


def test_concurrent_writers_end_a_delivery_once(records: DeliveryRecords) -> None:
    create(records, "d1")
    results: list[bool] = []
    barrier = threading.Barrier(4)

    def end(state: str) -> None:
        barrier.wait()
        results.append(records.transition("d1", state))

    threads = [threading.Thread(target=end, args=(s,)) for s in (SUCCESS, ERROR, SUCCESS, ERROR)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(results) == [False, False, False, True]
    steps = records.transitions("d1")
    assert sum(1 for t in steps if not t.ignored and t.state in (SUCCESS, ERROR)) == 1


def test_a_transition_can_be_recorded_without_being_applied(records: DeliveryRecords) -> None:
    create(records, "d1")
    records.transition("d1", "Installing")
    assert not records.transition("d1", "Downloading", ignore="out of order")
    found = records.get("d1")
    assert found is not None
    assert found.state == "Installing"
    assert records.transitions("d1")[-1].note == "out of order"


def test_an_unknown_delivery_cannot_change_state(records: DeliveryRecords) -> None:
    with pytest.raises(DeliveryError, match="no delivery 'nope' is recorded"):
        records.transition("nope", SUCCESS)


def test_installed_is_the_latest_success_per_device(records: DeliveryRecords) -> None:
    create(records, "a1", "dev-a", package_version="1.0.0", model_version="1")
    records.transition("a1", SUCCESS, at=T0 + timedelta(minutes=1))
    create(
        records,
        "a2",
        "dev-a",
        package_version="2.0.0",
        model_version="2",
        at=T0 + timedelta(hours=1),
    )
    records.transition("a2", SUCCESS, at=T0 + timedelta(hours=1, minutes=1))
    create(
        records,
        "a3",
        "dev-a",
        package_version="3.0.0",
        model_version="3",
        at=T0 + timedelta(hours=2),
    )
    records.transition("a3", ERROR, error="disk full")
    create(records, "b1", "dev-b", package_version="1.0.0", model_version="1")
    records.transition("b1", SUCCESS, at=T0 + timedelta(minutes=2))
    create(records, "c1", "dev-c", project_id="other")
    records.transition("c1", TIMED_OUT)
    create(records, "s1", "dev-d", state=SKIPPED, error="rollout aborted")

    installed = records.installed()

    assert [
        (i.device_id, i.package_version, i.model_version, i.delivery_id) for i in installed
    ] == [
        ("dev-a", "2.0.0", "2", "a2"),
        ("dev-b", "1.0.0", "1", "b1"),
    ]
    assert installed[0].installed_at == T0 + timedelta(hours=1, minutes=1)
    assert records.installed(project_id="other") == []
    history = records.history("dev-a")
    assert [(h.delivery_id, h.state) for h in history] == [
        ("a3", ERROR),
        ("a2", SUCCESS),
        ("a1", SUCCESS),
    ]
    assert history[0].error == "disk full"
    assert [h.delivery_id for h in records.history("dev-a", limit=1)] == ["a3"]
    skipped = records.get("s1")
    assert skipped is not None
    assert (skipped.state, skipped.error, skipped.ended_at) == (SKIPPED, "rollout aborted", T0)
    assert {r.delivery_id for r in records.rollout("r1")} == {"a1", "a2", "a3", "b1", "c1", "s1"}


def test_times_must_carry_a_zone(records: DeliveryRecords) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        create(records, "d1", at=datetime(2026, 1, 1))


def test_the_default_store_is_sqlite_under_modelferry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = DeliveryRecords()
    try:
        create(store, "d1")
    finally:
        store.close()
    assert (tmp_path / ".modelferry" / "deliveries.db").is_file()
    engine = create_engine(f"sqlite:///{tmp_path / '.modelferry' / 'deliveries.db'}")
    with engine.connect() as connection:
        tables = {row[0] for row in connection.execute(text("SELECT name FROM sqlite_master"))}
    engine.dispose()
    assert {"deliveries", "delivery_transitions"} <= tables


def test_an_unreachable_database_names_it_without_the_password() -> None:
    url = "postgresql+psycopg://ferry:s3cret@127.0.0.1:1/deliveries?connect_timeout=2"
    with pytest.raises(DeliveryError) as caught:
        DeliveryRecords(url)
    message = str(caught.value)
    assert "ferry:***@127.0.0.1:1/deliveries" in message
    assert "s3cret" not in message
    assert "check that the database is reachable" in message


def test_async_writes_are_batched_and_a_bad_one_fails_alone(records: DeliveryRecords) -> None:
    async def run() -> list[object]:
        writer = AsyncDeliveryRecords(records)
        try:
            await asyncio.gather(*(writer.create(**fields(f"d{n}")) for n in range(50)))
            # Queued together, these go to the database in a few transactions; the one for
            # an unknown delivery must fail on its own and not take the others with it.
            writes = [writer.transition(f"d{n}", SUCCESS) for n in range(50)]
            writes.insert(25, writer.transition("unknown", SUCCESS))
            writes.append(writer.transition("d0", ERROR))
            return await asyncio.gather(*writes, return_exceptions=True)
        finally:
            writer.close()

    results = asyncio.run(run())

    assert results[:25] + results[26:-1] == [True] * 50
    assert isinstance(results[25], DeliveryError)
    assert "no delivery 'unknown' is recorded" in str(results[25])
    assert results[-1] is False
    assert {r.state for r in records.rollout("r1")} == {SUCCESS}
    assert [t.state for t in records.transitions("d0")] == [PENDING, SUCCESS, ERROR]


def test_a_closed_writer_refuses_writes(records: DeliveryRecords) -> None:
    async def run() -> None:
        writer = AsyncDeliveryRecords(records)
        writer.close()
        writer.close()
        with pytest.raises(DeliveryError, match="writer is closed"):
            await writer.create(**fields("d1"))

    asyncio.run(run())


def test_attributes_that_are_not_valid_json_are_stored_as_valid_json(
    records: DeliveryRecords,
) -> None:
    records.create(**fields("d-nan"))
    records.transition(
        "d-nan", "Downloading", attributes={"bytes": float("nan"), "rate": float("inf")}
    )

    [*_, step] = records.transitions("d-nan")
    assert step.attributes == {"bytes": None, "rate": None}


def test_oversized_attributes_are_stored_as_a_marker(records: DeliveryRecords) -> None:
    records.create(**fields("d-big"))
    records.transition("d-big", "Downloading", attributes={"log": "x" * 5_000_000})

    [*_, step] = records.transitions("d-big")
    assert step.attributes["truncated"] is True
    assert "log" not in step.attributes
