"""The cache keys of data loading and training: code, libraries and inputs, nothing less."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pandas as pd
import pytest

from modelferry.config import load_config
from modelferry.data import Dataset
from tasks import caching
from tasks.data import DATA_CODE, data_cache_key
from tasks.training import TRAINING_CODE, training_cache_key

REPO = Path(__file__).parents[2]
PACKAGE = REPO / "src" / "modelferry"
ESTIMATORS = Path("modelferry") / "training" / "estimators.py"

# Prints the training key a checkout computes; run inside a copy of the tree.
_PRINT_TRAINING_KEY = """
import pandas as pd
from modelferry.config import load_config
from modelferry.data import Dataset
from tasks.training import training_cache_key
frame = pd.DataFrame({"x": [0.0, 1.0, 2.0], "target": [0, 1, 0]})
dataset = Dataset.from_frame(frame, "target", ("no", "yes"), "test://frame")
config = load_config("config/model_config.json")
print(training_cache_key(None, {"dataset": dataset, "config": config}))
"""


def copy_checkout(destination: Path) -> Path:
    """The library, the tasks and the model config, copied as a checkout of its own."""
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    shutil.copytree(PACKAGE, destination / "src" / "modelferry", ignore=ignore)
    shutil.copytree(REPO / "tasks", destination / "tasks", ignore=ignore)
    shutil.copytree(REPO / "config", destination / "config")
    return destination


def training_key_of(checkout: Path) -> str:
    """The training key computed by a fresh process that imports `checkout`'s code."""
    env = {**os.environ, "PYTHONPATH": f"{checkout}{os.pathsep}{checkout / 'src'}"}
    probe = _PRINT_TRAINING_KEY + "import modelferry; print(modelferry.__file__)\n"
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    key, module_file = done.stdout.split()
    assert Path(module_file).is_relative_to(checkout), "the copy's code was not the one run"
    return key


def small_dataset() -> Dataset:
    frame = pd.DataFrame({"x": [0.0, 1.0, 2.0], "target": [0, 1, 0]})
    return Dataset.from_frame(frame, "target", ("no", "yes"), "test://frame")


def test_a_copy_of_the_code_has_the_fingerprint_of_the_original(tmp_path: Path) -> None:
    shutil.copytree(PACKAGE / "training", tmp_path / "training")

    assert caching.fingerprint_sources([tmp_path / "training"]) == caching.code_fingerprint(
        ("modelferry.training",)
    )


def test_a_changed_training_parameter_in_the_code_changes_the_fingerprint(
    tmp_path: Path,
) -> None:
    copy = tmp_path / "training"
    shutil.copytree(PACKAGE / "training", copy)
    before = caching.fingerprint_sources([copy])
    estimators = copy / "estimators.py"
    source = estimators.read_text(encoding="utf-8")
    assert '"n_estimators": 200' in source
    estimators.write_text(source.replace('"n_estimators": 200', '"n_estimators": 2'), "utf-8")

    assert caching.fingerprint_sources([copy]) != before


def test_a_checkout_whose_training_code_changed_gets_a_new_training_key(tmp_path: Path) -> None:
    checkout = copy_checkout(tmp_path / "checkout")
    unchanged = training_key_of(checkout)
    estimators = checkout / "src" / ESTIMATORS
    source = estimators.read_text(encoding="utf-8")
    estimators.write_text(source.replace('"n_estimators": 200', '"n_estimators": 2'), "utf-8")

    changed = training_key_of(checkout)

    config = load_config(REPO / "config" / "model_config.json")
    here = training_cache_key(None, {"dataset": small_dataset(), "config": config})  # type: ignore[arg-type]
    assert unchanged == here, "the same code in another folder keys the same"
    assert changed != unchanged


def test_the_keys_cover_the_code_that_computes_the_result() -> None:
    assert {"modelferry.training", "modelferry.data", "modelferry.config", "tasks.training"} <= set(
        TRAINING_CODE
    )
    assert {"modelferry.data", "modelferry.config", "tasks.data"} <= set(DATA_CODE)


def test_a_different_code_fingerprint_changes_both_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    config = load_config(REPO / "config" / "model_config.json")
    training = {"dataset": small_dataset(), "config": config}
    data = {"config": config.data}
    before = (training_cache_key(None, training), data_cache_key(None, data))  # type: ignore[arg-type]
    original = caching.code_fingerprint
    monkeypatch.setattr(caching, "code_fingerprint", lambda code: original(code) + "-edited")

    after = (training_cache_key(None, training), data_cache_key(None, data))  # type: ignore[arg-type]

    assert after[0] != before[0]
    assert after[1] != before[1]


def test_the_keys_change_with_the_library_versions(monkeypatch: pytest.MonkeyPatch) -> None:
    config = load_config(REPO / "config" / "model_config.json")
    training = {"dataset": small_dataset(), "config": config}
    versions = caching.library_versions()
    before = training_cache_key(None, training)  # type: ignore[arg-type]
    monkeypatch.setattr(caching, "library_versions", lambda: versions + ",lightgbm=99.0")

    assert training_cache_key(None, training) != before  # type: ignore[arg-type]
    assert f"python={platform.python_version()}" in versions
    for name in ("modelferry", "lightgbm", "scikit-learn", "numpy", "pandas", "scipy"):
        assert f"{name}={version(name)}" in versions


def test_the_training_key_changes_with_the_settings_and_the_label_column() -> None:
    config = load_config(REPO / "config" / "model_config.json")
    frame = pd.DataFrame({"x": [0, 1, 0], "target": [0, 1, 0]})
    dataset = Dataset.from_frame(frame, "target", ("no", "yes"), "test://frame")
    other_label = Dataset.from_frame(frame, "x", ("no", "yes"), "test://frame")
    seeded = config.model_copy(update={"seed": config.seed + 1})
    params = {**config.model.params, "n_estimators": 2}
    fewer_trees = config.model_copy(
        update={"model": config.model.model_copy(update={"params": params})}
    )

    keys = {
        training_cache_key(None, {"dataset": data, "config": settings})  # type: ignore[arg-type]
        for data, settings in [
            (dataset, config),
            (other_label, config),
            (dataset, seeded),
            (dataset, fewer_trees),
        ]
    }

    assert len(keys) == 4


def test_the_task_results_folder_defaults_to_the_project(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(caching.TASK_RESULTS_ENV, raising=False)

    assert caching.task_results_path() == Path(".modelferry/cache/task-results")


def test_the_tasks_keep_results_where_the_environment_variable_says(tmp_path: Path) -> None:
    env = {**os.environ, caching.TASK_RESULTS_ENV: str(tmp_path / "results")}
    probe = (
        "from tasks.data import load_data\n"
        "from tasks.training import train\n"
        "print(load_data.result_storage)\n"
        "print(train.result_storage)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )

    assert done.stdout.split() == [str(tmp_path / "results")] * 2
