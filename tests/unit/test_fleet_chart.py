"""The fleet chart: per ring, devices ended in each state over time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from PIL import Image

from modelferry.delivery.fleet_chart import save_fleet_chart
from modelferry.delivery.outcomes import DeviceResult, FleetResult
from modelferry.delivery.protocol.states import ERROR, SKIPPED, SUCCESS, TIMED_OUT
from modelferry.pictures import BASELINE, FAILED, NOT_JUDGED, PASSED
from tests.pictures import pixels_of

START = datetime(2026, 12, 7, 2, 0, tzinfo=UTC)


def row(index: int, state: str, ring: int, seconds: float | None) -> DeviceResult:
    ended = None if seconds is None else START + timedelta(seconds=seconds)
    return DeviceResult(
        f"dev-{index:04d}", state, 1, 1.0, None, "pkg", "1", "m", "1", f"d{index}",
        ring=ring, finished_at=ended,
    )  # fmt: skip


def fleet(rows: list[DeviceResult], **kw: object) -> FleetResult:
    return FleetResult("r1", "pkg", "1", tuple(rows), started_at=START, **kw)  # type: ignore[arg-type]


def test_each_final_state_has_its_colour(tmp_path: Path) -> None:
    rows = [row(i, SUCCESS, 1, i) for i in range(10)]
    rows += [row(10 + i, ERROR, 2, 10 + i) for i in range(10)]
    rows += [row(20 + i, TIMED_OUT, 2, 20 + i) for i in range(10)]

    path = save_fleet_chart(fleet(rows), "Delivery of pkg 1", tmp_path / "f.png")

    assert pixels_of(path, PASSED) > 500
    assert pixels_of(path, FAILED) > 500
    assert pixels_of(path, NOT_JUDGED) > 500


def test_a_fleet_that_all_succeeded_has_no_red(tmp_path: Path) -> None:
    rows = [row(i, SUCCESS, 1, i / 10) for i in range(50)]

    path = save_fleet_chart(fleet(rows), "t", tmp_path / "f.png")

    assert pixels_of(path, FAILED) == 0
    assert pixels_of(path, PASSED) > 500


def test_an_aborted_rollout_shows_its_skipped_ring(tmp_path: Path) -> None:
    rows = [row(0, SUCCESS, 1, 1.0), row(1, ERROR, 1, 2.0)]
    rows += [row(2 + i, SKIPPED, 2, 2.5) for i in range(18)]
    result = fleet(rows, aborted=True, abort_reason="1 of 2 canary device(s) failed")

    path = save_fleet_chart(result, "t", tmp_path / "f.png")

    assert pixels_of(path, BASELINE) > 500


def test_every_ring_gets_a_panel(tmp_path: Path) -> None:
    one = save_fleet_chart(fleet([row(0, SUCCESS, 1, 1.0)]), "t", tmp_path / "one.png")
    three = save_fleet_chart(
        fleet([row(i, SUCCESS, i + 1, float(i)) for i in range(3)]), "t", tmp_path / "three.png"
    )

    with Image.open(one) as a, Image.open(three) as b:
        assert b.size[1] > 2 * a.size[1]


def test_rows_without_end_times_or_no_rows_still_draw(tmp_path: Path) -> None:
    for rows in ([row(0, SUCCESS, 1, None)], []):
        path = save_fleet_chart(fleet(rows), "t", tmp_path / f"f{len(rows)}.png")
        with Image.open(path) as image:
            assert image.format == "PNG"


def test_a_hundred_thousand_devices_draw(tmp_path: Path) -> None:
    rows = [
        row(i, SUCCESS if i % 50 else ERROR, 1 if i < 1000 else 2, i / 100) for i in range(100_000)
    ]

    path = save_fleet_chart(fleet(rows), "t", tmp_path / "f.png")

    assert pixels_of(path, PASSED) > 1000
