"""Cached data loading and training on a Prefect test server: reused only when nothing
that makes the result changed, and kept under the project, not in Prefect's home."""

from __future__ import annotations

from pathlib import Path

import pytest
from prefect import flow
from prefect.settings import PREFECT_LOCAL_STORAGE_PATH

from modelferry.config import load_config
from tasks import caching
from tasks.data import load_data
from tasks.training import train
from tests.integration.flow_helpers import write_config

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _project(prefect_harness: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test runs on the shared Prefect test server, in a project of its own."""
    monkeypatch.chdir(tmp_path)


@flow(name="load-and-train")
def load_and_train(config_path: str) -> tuple[str, str]:
    """The data and training steps of train-and-register; returns their state names."""
    config = load_config(config_path)
    data_state = load_data(config.data, return_state=True)
    train_state = train(data_state.result(), config, return_state=True)
    train_state.result()
    return data_state.name or "", train_state.name or ""


def files_under(folder: Path) -> set[Path]:
    return {path for path in folder.rglob("*") if path.is_file()} if folder.exists() else set()


def test_a_second_run_with_the_same_inputs_takes_the_cached_training(tmp_path: Path) -> None:
    config = str(write_config(tmp_path))

    assert load_and_train(config) == ("Completed", "Completed")
    assert load_and_train(config) == ("Cached", "Cached")


def test_changed_training_code_trains_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = str(write_config(tmp_path))
    assert load_and_train(config) == ("Completed", "Completed")
    original = caching.code_fingerprint

    def edited_training(code: tuple[str, ...]) -> str:
        # As if a line of modelferry.training had changed; the data code has not.
        return original(code) + ("-edited" if "modelferry.training" in code else "")

    monkeypatch.setattr(caching, "code_fingerprint", edited_training)

    assert load_and_train(config) == ("Cached", "Completed")
    assert load_and_train(config) == ("Cached", "Cached")


def test_results_are_kept_under_the_project_and_not_in_prefect_storage(tmp_path: Path) -> None:
    prefect_storage = Path(PREFECT_LOCAL_STORAGE_PATH.value())
    before = files_under(prefect_storage)

    load_and_train(str(write_config(tmp_path)))

    results = files_under(tmp_path / ".modelferry" / "cache" / "task-results")
    assert len(results) >= 2, "one result per cached task"
    assert files_under(prefect_storage) == before


def test_another_project_does_not_reuse_the_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = str(write_config(tmp_path))
    assert load_and_train(config) == ("Completed", "Completed")
    other = tmp_path / "other-checkout"
    other.mkdir()
    monkeypatch.chdir(other)

    assert load_and_train(config) == ("Completed", "Completed")
