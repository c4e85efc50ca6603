"""The local backend's state file: release markers in the traffic history, old files, logs."""

from __future__ import annotations

import sqlite3
import tracemalloc
from dataclasses import replace
from pathlib import Path

import pytest
from pydantic import SecretStr

from modelferry.cli import main
from modelferry.endpoints.local import process
from modelferry.endpoints.local.state import EndpointRecord, EndpointStateStore, TrafficChange
from modelferry.endpoints.spec import TrafficSplit
from modelferry.errors import EndpointError
from tests.endpoint_state_files import FIRST_RELEASE_ENDPOINT_STATE

BLUE, GREEN = TrafficSplit({"blue": 100}), TrafficSplit({"green": 100})
LABELS = {"blue": "blue (v1)", "green": "green (v2)"}


def record(name: str) -> EndpointRecord:
    return EndpointRecord(
        name, 8000, None, SecretStr("k"), SecretStr("t"), "", {}, BLUE, "file:///mlruns", None
    )


def test_a_state_file_from_before_release_markers_opens_with_its_history(tmp_path: Path) -> None:
    path = tmp_path / "endpoints.db"
    with sqlite3.connect(path) as db:
        db.executescript(FIRST_RELEASE_ENDPOINT_STATE)
    store = EndpointStateStore(path)
    found = store.get_endpoint("bc")
    assert found is not None
    assert found.scoring_key.get_secret_value() == "key-1"
    assert dict(found.traffic.weights) == {"blue": 100}
    assert store.traffic_history("bc") == [TrafficChange(GREEN, None)]
    store.mark_release("bc", ["green"])
    store.push_traffic("bc", BLUE, TrafficSplit({"blue": 90, "green": 10}), LABELS)
    assert store.traffic_history("bc")[0] == TrafficChange(BLUE, "green (v2)")
    EndpointStateStore(path)  # opening it again changes nothing
    assert len(store.traffic_history("bc")) == 2


def test_only_the_change_that_gives_the_new_version_traffic_begins_its_release(
    tmp_path: Path,
) -> None:
    store = EndpointStateStore(tmp_path / "endpoints.db")
    store.put_endpoint(record("bc"))
    store.mark_release("bc", ["green"])
    mirrored = TrafficSplit({"blue": 100}, {"green": 10})
    store.push_traffic("bc", BLUE, mirrored, LABELS)  # a mirror only: not yet the release
    canary = [TrafficSplit({"blue": 90, "green": 10}), TrafficSplit({"blue": 50, "green": 50})]
    store.push_traffic("bc", mirrored, canary[0], LABELS)
    store.push_traffic("bc", canary[0], canary[1], LABELS)
    store.push_traffic("bc", canary[1], GREEN, LABELS)
    assert [c.release for c in store.traffic_history("bc")] == [None, None, "green (v2)", None]
    store.push_traffic("bc", GREEN, BLUE, LABELS)  # by hand: the release was already marked
    store.push_traffic("bc", BLUE, GREEN, LABELS)
    assert [c.release for c in store.traffic_history("bc")][:2] == [None, None]
    store.drop_traffic_history("bc", 2)
    assert store.traffic_history("bc")[0] == TrafficChange(canary[1], None)


def test_a_rotated_key_is_stored(tmp_path: Path) -> None:
    store = EndpointStateStore(tmp_path / "endpoints.db")
    store.put_endpoint(record("bc"))
    store.set_scoring_key("bc", SecretStr("new"))
    found = store.get_endpoint("bc")
    assert found is not None
    assert found.scoring_key.get_secret_value() == "new"


def test_log_tail_of_one_deployment(tmp_path: Path) -> None:
    log = tmp_path / "bc.log"
    log.write_text(
        "t INFO modelferry.endpoint deployment=blue loaded m v1\n"
        "t INFO modelferry.requests request deployment=green status=200 rows=1\n"
        "t INFO modelferry.endpoint routing {'blue': 100}\n"
        "t INFO modelferry.requests request deployment=greenish status=200 rows=1\n"
        "t WARNING modelferry.requests request deployment=green status=500 rows=0\n"
    )
    assert process.tail(log, 10, "green").splitlines() == [
        "t INFO modelferry.requests request deployment=green status=200 rows=1",
        "t WARNING modelferry.requests request deployment=green status=500 rows=0",
    ]
    assert process.tail(log, 1, "green").endswith("status=500 rows=0")
    assert len(process.tail(log, 10).splitlines()) == 5


def test_writing_back_a_record_read_before_a_rotation_keeps_the_new_key(tmp_path: Path) -> None:
    store = EndpointStateStore(tmp_path / "endpoints.db")
    store.put_endpoint(record("bc"))
    read_before = store.get_endpoint("bc")
    assert read_before is not None
    store.set_scoring_key("bc", SecretStr("rotated"))
    # A traffic change that read the row before the rotation writes it back after it.
    store.put_endpoint(replace(read_before, traffic=GREEN))
    found = store.get_endpoint("bc")
    assert found is not None
    assert found.scoring_key.get_secret_value() == "rotated"
    assert found.admin_token.get_secret_value() == "t"
    assert found.traffic == GREEN


@pytest.mark.parametrize(
    ("column", "garbage"),
    [
        ("weights", "{not json"),
        ("weights", "[1, 2]"),
        ("weights", "null"),
        ("weights", '{"blue": "x"}'),
        ("weights", '{"blue": 150}'),
        ("mirror", '{"blue": 10}'),
        ("tags", '{"team": 1}'),
    ],
)
def test_a_hand_edited_endpoint_row_fails_with_one_line_that_says_how_to_mend_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], column: str, garbage: str
) -> None:
    home = tmp_path / "endpoints"
    store = EndpointStateStore(home / "endpoints.db")
    store.put_endpoint(record("bc"))
    with sqlite3.connect(store.path) as db:
        db.execute(f"UPDATE endpoints SET {column} = ?", (garbage,))
    for action in (["list"], ["show", "bc"], ["list", "-o", "json"]):
        argv = ["endpoints", *action, "--home", str(home), "--tracking-uri", "file:///m"]
        assert main(argv) == 1
        out, err = capsys.readouterr()
        assert out == ""
        assert "Traceback" not in err
        assert len(err.strip().splitlines()) == 1
        assert f"endpoint 'bc': the state file {store.path} holds an unreadable" in err
        assert f"sqlite3 {store.path}" in err


def test_a_hand_edited_history_entry_says_how_to_mend_it(tmp_path: Path) -> None:
    store = EndpointStateStore(tmp_path / "endpoints.db")
    store.put_endpoint(record("bc"))
    store.push_traffic("bc", GREEN, BLUE, LABELS)
    with sqlite3.connect(store.path) as db:
        db.execute("UPDATE traffic_history SET weights = 'oops'")
    with pytest.raises(EndpointError, match=r"unreadable traffic_history\.weights") as caught:
        store.traffic_history("bc")
    assert "DELETE FROM traffic_history WHERE endpoint = 'bc'" in str(caught.value)


def test_log_tail_of_a_long_log_reads_its_end_only(tmp_path: Path) -> None:
    log = tmp_path / "bc.log"
    line = b"t INFO modelferry.requests request deployment=blue status=200 rows=1\n"
    with log.open("wb") as out:
        out.write(line * 500_000)  # 35 MB
        out.write(b"t INFO modelferry.requests request deployment=green status=200 rows=7\n")
        out.write(b"t INFO modelferry.endpoint routing {'blue': 100}\n")
    tracemalloc.start()
    try:
        last = process.tail(log, 2)
        green = process.tail(log, 1, "green")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert last.splitlines() == [
        "t INFO modelferry.requests request deployment=green status=200 rows=7",
        "t INFO modelferry.endpoint routing {'blue': 100}",
    ]
    assert green.endswith("deployment=green status=200 rows=7")
    assert peak < 1_000_000, f"tail of a 35 MB log took {peak} bytes"
