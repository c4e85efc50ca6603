"""Compiled LightGBM trees: same probabilities as LightGBM, cached safely, never trusted blindly."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import lightgbm
import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer

from modelferry.serving import compiled
from modelferry.serving.compiled import (
    CompilationUnavailable,
    CompiledBoosterPredictor,
    compile_booster,
    probe_rows,
)
from modelferry.serving.model import (
    BoosterPredictor,
    EstimatorPredictor,
    ServingModel,
    with_compiled_trees,
)
from modelferry.serving.schema import FeatureSpec
from tests.model_fixtures import noisy_rows


def _booster(trees: int, objective: str = "binary") -> lightgbm.Booster:
    features, labels = load_breast_cancer(return_X_y=True)
    if objective == "multiclass":
        labels = np.digitize(features[:, 0], [12.0, 16.0])
    params: dict[str, Any] = {
        "objective": objective,
        "num_leaves": 15,
        "min_data_in_leaf": 2,
        "verbosity": -1,
    }
    if objective == "multiclass":
        params["num_class"] = 3
    return lightgbm.train(params, lightgbm.Dataset(features, labels), num_boost_round=trees)


@pytest.fixture(scope="module")
def booster() -> lightgbm.Booster:
    return _booster(trees=12)


def _rows(booster: lightgbm.Booster, count: int = 50_000) -> np.ndarray:
    """Breast-cancer-like rows with noise and some missing values."""
    return noisy_rows(count, seed=7, missing=0.02)


def test_compiled_trees_give_lightgbm_probabilities(
    booster: lightgbm.Booster, tmp_path: Path
) -> None:
    predictor = compile_booster(booster, tmp_path)
    rows = _rows(booster)  # above the one-thread size, so both the threaded path and ...
    expected = booster.predict(rows)
    proba = predictor.predict_proba(rows)
    assert proba.shape == (len(rows), 2)
    np.testing.assert_allclose(proba[:, 1], expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    small = predictor.predict_proba(rows[:3])  # ... the one-thread path are checked
    np.testing.assert_allclose(small[:, 1], expected[:3], rtol=0, atol=1e-12)


def test_a_second_load_uses_the_cache_and_compiles_nothing(
    booster: lightgbm.Booster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    compile_booster(booster, tmp_path)
    cached = list(tmp_path.glob("*.o"))
    assert len(cached) == 1
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no leftovers

    def no_compiling(*args: object) -> None:
        raise AssertionError("compiled again although the cache holds this model")

    monkeypatch.setattr(compiled, "_compile_into", no_compiling)
    # A cache hit writes nothing into the folder, so a read-only shared cache serves too.
    untouched = tmp_path.stat().st_mtime_ns
    predictor = compile_booster(booster, tmp_path)
    assert tmp_path.stat().st_mtime_ns == untouched
    rows = _rows(booster, 1_000)
    np.testing.assert_allclose(
        predictor.predict_proba(rows)[:, 1], booster.predict(rows), rtol=0, atol=1e-12
    )


def test_a_foreign_cache_file_is_caught_by_the_probe_and_replaced(
    booster: lightgbm.Booster, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    other = _booster(trees=9)
    compile_booster(other, tmp_path / "other")
    foreign = next((tmp_path / "other").glob("*.o"))
    # Plant the other model's code, with its own valid checksum, under this model's name.
    compile_booster(booster, tmp_path / "mine")
    mine = next((tmp_path / "mine").glob("*.o"))
    mine.write_bytes(foreign.read_bytes())
    mine.with_suffix(".sha256").write_bytes(foreign.with_suffix(".sha256").read_bytes())

    with caplog.at_level(logging.WARNING, logger="modelferry.serving.compiled"):
        predictor = compile_booster(booster, tmp_path / "mine")

    assert "unusable" in caplog.text
    assert "differ from LightGBM" in caplog.text
    rows = _rows(booster, 2_000)
    np.testing.assert_allclose(
        predictor.predict_proba(rows)[:, 1], booster.predict(rows), rtol=0, atol=1e-12
    )
    assert mine.read_bytes() != foreign.read_bytes()


# Run in a child process: LLVM aborts the whole process when handed a damaged object file.
_LOAD_DAMAGED = """
import sys
from pathlib import Path
import lightgbm, numpy as np
from sklearn.datasets import load_breast_cancer
from modelferry.serving.compiled import compile_booster
features, labels = load_breast_cancer(return_X_y=True)
params = {"objective": "binary", "num_leaves": 7, "verbosity": -1}
booster = lightgbm.train(params, lightgbm.Dataset(features, labels), num_boost_round=5)
folder = Path(sys.argv[1])
compile_booster(booster, folder)
cached = next(folder.glob("*.o"))
whole = cached.read_bytes()
damage = sys.argv[2]
if damage == "truncated":
    cached.write_bytes(whole[: len(whole) // 2])
elif damage == "garbage":
    cached.write_bytes(b"\\x7fELF" + bytes(len(whole)))
elif damage == "empty":
    cached.write_bytes(b"")
elif damage == "no-checksum":
    cached.with_suffix(".sha256").unlink()
predictor = compile_booster(booster, folder)
worst = np.abs(predictor.predict_proba(features)[:, 1] - booster.predict(features)).max()
assert worst < 1e-12, worst
assert cached.read_bytes() == whole  # compiled again, and the same code
print("recompiled")
"""


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "no-checksum"])
def test_a_damaged_cache_file_is_compiled_again_not_loaded(tmp_path: Path, damage: str) -> None:
    child = subprocess.run(
        [sys.executable, "-c", _LOAD_DAMAGED, str(tmp_path), damage],
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert child.returncode == 0, child.stderr[-2000:]
    assert child.stdout.strip() == "recompiled"
    assert "fails its checksum; compiling again" in child.stderr


def test_a_disagreeing_compilation_is_refused_and_not_cached(
    booster: lightgbm.Booster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = CompiledBoosterPredictor.predict_proba

    def off_by_a_little(self: CompiledBoosterPredictor, features: np.ndarray) -> np.ndarray:
        return original(self, features) + 1e-6

    monkeypatch.setattr(CompiledBoosterPredictor, "predict_proba", off_by_a_little)
    with pytest.raises(CompilationUnavailable, match="differ from LightGBM by up to 1e-06"):
        compile_booster(booster, tmp_path)
    assert list(tmp_path.glob("*.o")) == []


def test_the_best_iteration_is_the_last_tree_compiled(tmp_path: Path) -> None:
    booster = _booster(trees=12)
    booster.best_iteration = 5
    predictor = compile_booster(booster, tmp_path)
    rows = _rows(booster, 2_000)
    np.testing.assert_allclose(
        predictor.predict_proba(rows)[:, 1],
        booster.predict(rows, num_iteration=5),
        rtol=0,
        atol=1e-12,
    )
    assert not np.allclose(
        booster.predict(rows, num_iteration=5), booster.predict(rows, num_iteration=12)
    )


def test_multiclass_models_are_not_compiled(tmp_path: Path) -> None:
    with pytest.raises(CompilationUnavailable, match="only binary models"):
        compile_booster(_booster(trees=3, objective="multiclass"), tmp_path)


def test_an_unusable_cache_folder_makes_compilation_unavailable(
    booster: lightgbm.Booster, tmp_path: Path
) -> None:
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the cache folder should be")

    with pytest.raises(CompilationUnavailable, match="MODELFERRY_COMPILED_MODELS"):
        compile_booster(booster, blocked / "compiled")


def test_without_lleaves_compilation_is_unavailable(
    booster: lightgbm.Booster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "lleaves", None)
    with pytest.raises(CompilationUnavailable, match="lleaves is not installed"):
        compile_booster(booster, tmp_path)


def test_probe_rows_take_both_sides_of_every_split_and_the_missing_side(
    booster: lightgbm.Booster,
) -> None:
    splits = compiled._split_thresholds(booster.dump_model()["tree_info"])
    assert splits
    most = max(len(thresholds) for thresholds in splits.values())
    # Asked for fewer rows than the values to show, the probe grows to show them all.
    for asked in (compiled.PROBE_ROWS, 4):
        probe = probe_rows(booster, rows=asked)
        assert probe.shape == (max(asked, 3 * most + 1), booster.num_feature())
        for feature, thresholds in splits.items():
            column = probe[:, feature]
            assert np.isnan(column).any()
            points = np.asarray(sorted(thresholds))
            # At each threshold (LightGBM goes left), and one step either side of it.
            for shown in (np.nextafter(points, -np.inf), points, np.nextafter(points, np.inf)):
                assert np.isin(shown, column).all()


def _serving(predictor: Any) -> ServingModel:
    features = tuple(FeatureSpec(f"f{i}", "double") for i in range(30))
    return ServingModel("m", "1", features, ("ABSENT", "PRESENT"), predictor)


def test_with_compiled_trees_swaps_in_the_compiled_predictor(
    booster: lightgbm.Booster, tmp_path: Path
) -> None:
    model = with_compiled_trees(_serving(BoosterPredictor(booster)), tmp_path)
    assert isinstance(model.predictor, CompiledBoosterPredictor)
    assert (model.name, model.version, model.class_names) == ("m", "1", ("ABSENT", "PRESENT"))


def test_with_compiled_trees_keeps_lightgbm_when_compiling_is_unavailable(
    booster: lightgbm.Booster,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setitem(sys.modules, "lleaves", None)
    original = _serving(BoosterPredictor(booster))
    with caplog.at_level(logging.WARNING, logger="modelferry.serving.model"):
        model = with_compiled_trees(original, tmp_path)
    assert model is original
    assert "Scoring m v1 with LightGBM's own predictor: lleaves is not installed" in caplog.text


def test_with_compiled_trees_leaves_other_estimators_alone(tmp_path: Path) -> None:
    original = _serving(EstimatorPredictor(object()))
    assert with_compiled_trees(original, tmp_path) is original
    assert list(tmp_path.iterdir()) == []


def test_the_cache_folder_comes_from_the_environment(
    booster: lightgbm.Booster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELFERRY_COMPILED_MODELS", str(tmp_path / "compiled"))
    with_compiled_trees(_serving(BoosterPredictor(booster)))
    assert len(list((tmp_path / "compiled").glob("*.o"))) == 1


@pytest.mark.parametrize("version", ["1.4.0", "1.2.9", "2.0.0", "1.3.0rc1", "1.3.1.dev0"])
def test_an_untested_lleaves_release_keeps_lightgbm_and_says_why(
    version: str,
    booster: lightgbm.Booster,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from lleaves.compiler import tree_compiler
    from lleaves.compiler.codegen import codegen

    from modelferry.serving import tree_codegen

    monkeypatch.setattr(tree_codegen, "installed_lleaves", lambda: version)
    hooked = (codegen._gen_decision_node, tree_compiler.gen_forest)
    original = _serving(BoosterPredictor(booster))

    with caplog.at_level(logging.WARNING, logger="modelferry.serving.model"):
        model = with_compiled_trees(original, tmp_path)

    assert model is original
    assert isinstance(model.predictor, BoosterPredictor)
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.getMessage() == (
        f"Scoring m v1 with LightGBM's own predictor: lleaves {version} is installed, but "
        "modelferry's code generator hooks lleaves' internals and supports only "
        "lleaves >=1.3.0,<1.4"
    )
    # Nothing was hooked or compiled.
    assert (codegen._gen_decision_node, tree_compiler.gen_forest) == hooked
    assert list(tmp_path.iterdir()) == []
    rows = _rows(booster, 10)
    np.testing.assert_array_equal(model.predictor.predict_proba(rows)[:, 1], booster.predict(rows))


@pytest.mark.parametrize("version", ["1.3.0", "1.3.7", "1.3.0.post1"])
def test_the_tested_lleaves_releases_are_hooked(version: str) -> None:
    from modelferry.serving.tree_codegen import unsupported_lleaves

    assert unsupported_lleaves(version) is None
