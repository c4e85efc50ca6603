"""Progress callbacks: the reporter's contract, and the fleet and batch scoring keeping it."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from dataclasses import replace
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer

from modelferry.batch import run_batch
from modelferry.batch.inputs import estimate_rows
from modelferry.delivery.channels.local import LocalChannel, LocalHub
from modelferry.delivery.fleet import FleetRollout
from modelferry.delivery.outcomes import FleetResult
from modelferry.delivery.plan import DeliveryPlan, FleetPolicy
from modelferry.delivery.protocol.states import ERROR, SKIPPED, SUCCESS
from modelferry.progress import ProgressCallback, ProgressReporter
from modelferry.serving.model import BoosterPredictor, ServingModel
from modelferry.serving.schema import FeatureSpec
from modelferry.structured_logging import bound_ids, log_context
from tests.fake_devices import DeviceScript, FakeFleet, make_package

ROWS = 569  # the breast-cancer dataset


class Recorder:
    """A progress callback that keeps every call, from any thread."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def __call__(self, done: int, total: int) -> None:
        self.calls.append((done, total))


def raising(done: int, total: int) -> None:
    raise RuntimeError("the display is gone")


def assert_monotone(calls: list[tuple[int, int]], total: int) -> None:
    assert calls[0] == (0, total)
    assert all(t == total for _, t in calls)
    done = [d for d, _ in calls]
    assert done == sorted(done)
    assert all(0 <= d <= total for d in done)


# --- the reporter ----------------------------------------------------------------------


def test_the_reporter_starts_at_zero_and_ends_at_the_total() -> None:
    recorder = Recorder()
    reporter = ProgressReporter(recorder, 3)

    reporter.start()
    for _ in range(3):
        reporter.advance()
    reporter.finish()

    assert recorder.calls == [(0, 3), (1, 3), (2, 3), (3, 3)]


def test_the_reporter_calls_at_most_once_per_percent() -> None:
    recorder = Recorder()
    reporter = ProgressReporter(recorder, 100_000)

    reporter.start()
    for _ in range(100_000):
        reporter.advance()
    reporter.finish()

    assert_monotone(recorder.calls, 100_000)
    assert len(recorder.calls) == 101  # 0 %, then each percent up to 100 %
    assert recorder.calls[-1] == (100_000, 100_000)


def test_done_never_passes_the_total_and_finish_tells_once() -> None:
    recorder = Recorder()
    reporter = ProgressReporter(recorder, 2)

    reporter.start()
    reporter.advance(5)
    reporter.finish()
    reporter.finish()

    assert recorder.calls == [(0, 2), (2, 2)]


def test_nothing_to_do_is_complete_at_once() -> None:
    recorder = Recorder()
    reporter = ProgressReporter(recorder, 0)

    reporter.start()
    reporter.finish()

    assert recorder.calls == [(0, 0)]


def test_threads_advancing_at_once_see_monotone_progress() -> None:
    recorder = Recorder()
    reporter = ProgressReporter(recorder, 40_000)
    reporter.start()

    def work() -> None:
        for _ in range(10_000):
            reporter.advance()

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert_monotone(recorder.calls, 40_000)
    assert recorder.calls[-1] == (40_000, 40_000)
    assert len(recorder.calls) <= 101


def test_a_raising_callback_is_logged_once_and_the_count_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    reporter = ProgressReporter(raising, 10, what="delivery")

    with caplog.at_level(logging.WARNING):
        reporter.start()
        for _ in range(10):
            reporter.advance()
        reporter.finish()

    assert reporter.done == 10
    warnings = [r for r in caplog.records if "Progress of delivery" in r.getMessage()]
    assert len(warnings) == 1
    assert "RuntimeError: the display is gone" in warnings[0].getMessage()


# --- the fleet -------------------------------------------------------------------------


def roll_out_with(
    tmp_path: Path,
    devices: list[str],
    on_progress: ProgressCallback,
    scripts: dict[str, DeviceScript] | None = None,
    **policy: object,
) -> FleetResult:
    hub = LocalHub()
    store, package = make_package(tmp_path)
    fleet = FakeFleet(hub, devices)
    for device, script in (scripts or {}).items():
        fleet.add(device, script)
    plan = DeliveryPlan(package=package, devices=tuple(devices), project_id="p", model_name="bc")

    async def run() -> FleetResult:
        async with fleet:
            rollout = FleetRollout(
                LocalChannel(hub), store, rollout_id="r1", on_progress=on_progress,
                policy=FleetPolicy(inactivity_timeout=30, deadline=120, retry_backoff=0, **policy),
            )  # fmt: skip
            return await rollout.run(plan)

    return asyncio.run(run())


def test_the_fleet_tells_each_device_that_finished(tmp_path: Path) -> None:
    recorder = Recorder()
    names = [f"dev-{n:02d}" for n in range(20)]

    result = roll_out_with(tmp_path, names, recorder, canary_share=0.1, max_parallel=4)

    assert result.counts == {SUCCESS: 20}
    assert recorder.calls == [(done, 20) for done in range(21)]


def test_skipped_devices_count_as_finished(tmp_path: Path) -> None:
    recorder = Recorder()
    names = [f"dev-{n:02d}" for n in range(10)]
    scripts = {"dev-00": DeviceScript(result="Error", error_reason="disk full")}

    result = roll_out_with(tmp_path, names, recorder, scripts, canary_share=0.1)

    assert result.aborted
    assert result.counts == {ERROR: 1, SKIPPED: 9}
    assert recorder.calls == [(0, 10), (1, 10), (10, 10)]


def test_a_raising_callback_does_not_break_the_delivery(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    names = [f"dev-{n:02d}" for n in range(5)]

    with caplog.at_level(logging.WARNING):
        result = roll_out_with(tmp_path, names, raising)

    assert result.ok
    assert result.counts == {SUCCESS: 5}
    assert caplog.text.count("Progress of delivery is not shown") == 1


# --- batch scoring ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def features() -> pd.DataFrame:
    return load_breast_cancer(as_frame=True).data


@pytest.fixture(scope="module")
def model(features: pd.DataFrame) -> ServingModel:
    target = load_breast_cancer().target
    estimator = lgb.LGBMClassifier(n_estimators=10, num_leaves=7, verbose=-1, random_state=0)
    estimator.fit(features.to_numpy(), target)
    specs = tuple(FeatureSpec(str(name), "double") for name in features.columns)
    return ServingModel(
        "bc", "3", specs, ("malignant", "benign"), BoosterPredictor(estimator.booster_)
    )


def inputs(features: pd.DataFrame, folder: Path) -> Path:
    folder.mkdir()
    features.iloc[:300].to_parquet(folder / "part-1.parquet", index=False)
    features.iloc[300:].to_csv(folder / "part-2.csv", index=False)
    return folder


def test_rows_are_estimated_exactly_for_parquet_and_csv(
    features: pd.DataFrame, tmp_path: Path
) -> None:
    folder = inputs(features, tmp_path / "in")
    (folder / "no-newline.csv").write_text("a,b\n1,2\n3,4", encoding="utf-8")
    os.mkfifo(folder / "pipe.csv")

    assert estimate_rows(folder / "part-1.parquet") == 300
    assert estimate_rows(folder / "part-2.csv") == ROWS - 300
    assert estimate_rows(folder / "no-newline.csv") == 2
    assert estimate_rows(folder / "pipe.csv") == 0  # never opened: it would wait forever
    assert estimate_rows(folder / "missing.parquet") == 0


@pytest.mark.parametrize("chunk_rows", [64, 1])
def test_batch_scoring_tells_rows_done_up_to_the_total(
    features: pd.DataFrame, model: ServingModel, tmp_path: Path, chunk_rows: int
) -> None:
    recorder = Recorder()
    folder = inputs(features, tmp_path / "in")

    result = run_batch(
        folder, model, tmp_path / "out.parquet", chunk_rows=chunk_rows, on_progress=recorder
    )

    assert result.rows_scored == ROWS
    assert_monotone(recorder.calls, ROWS)
    assert recorder.calls[-1] == (ROWS, ROWS)
    # One row at a time is 569 chunks; the callback hears of about one per percent.
    assert len(recorder.calls) <= 102


def test_a_skipped_bad_file_still_ends_at_the_total(
    features: pd.DataFrame, model: ServingModel, tmp_path: Path
) -> None:
    recorder = Recorder()
    folder = inputs(features, tmp_path / "in")
    features.drop(columns=["worst area"]).head(50).to_csv(folder / "bad.csv", index=False)

    result = run_batch(
        folder, model, tmp_path / "out.parquet", max_failed_files=1, on_progress=recorder
    )

    assert list(result.failed_files) == ["bad.csv"]
    assert_monotone(recorder.calls, ROWS + 50)
    assert recorder.calls[-1] == (ROWS + 50, ROWS + 50)


def test_a_raising_callback_does_not_break_the_batch(
    features: pd.DataFrame, model: ServingModel, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = inputs(features, tmp_path / "in")

    with caplog.at_level(logging.WARNING):
        result = run_batch(
            folder, model, tmp_path / "out.parquet", chunk_rows=16, on_progress=raising
        )

    assert result.written
    assert result.rows_scored == ROWS
    assert caplog.text.count("Progress of batch is not shown") == 1


class ContextRecordingPredictor:
    """Scores with `inner` and records, per call, the thread and the log ids bound in it."""

    def __init__(self, inner: BoosterPredictor) -> None:
        self.inner = inner
        self.seen: list[tuple[str, dict[str, str]]] = []

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        self.seen.append((threading.current_thread().name, dict(bound_ids())))
        return self.inner.predict_proba(features)


def test_worker_threads_score_in_the_callers_context(
    features: pd.DataFrame, model: ServingModel, tmp_path: Path
) -> None:
    assert isinstance(model.predictor, BoosterPredictor)
    recording = ContextRecordingPredictor(model.predictor)
    folder = inputs(features, tmp_path / "in")

    with log_context(delivery_id="nightly-42", model_name="bc"):
        result = run_batch(
            folder, replace(model, predictor=recording), tmp_path / "out.parquet", chunk_rows=100
        )

    assert result.rows_scored == ROWS
    threads = {thread for thread, _ in recording.seen}
    assert all(thread.startswith("batch-score") for thread in threads), threads
    assert {frozenset(ids.items()) for _, ids in recording.seen} == {
        frozenset({"delivery_id": "nightly-42", "model_name": "bc"}.items())
    }
