"""modelferry's additions to lleaves' code: branch-free subtrees and the columnar entry point."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lightgbm
import numpy as np
import pytest
from lleaves.compiler import tree_compiler
from lleaves.compiler.ast import parse_to_ast
from lleaves.compiler.codegen import codegen
from sklearn.datasets import load_breast_cancer

from modelferry.serving import compiled
from modelferry.serving.compiled import (
    CompilationUnavailable,
    CompiledBoosterPredictor,
    compile_booster,
)
from modelferry.serving.model import BoosterPredictor, ServingModel
from modelferry.serving.schema import FeatureSpec
from modelferry.serving.tree_codegen import (
    TILE_ROWS,
    _choose_branch_free,
    hooked_codegen,
    left_shares,
)
from tests.model_fixtures import noisy_rows


@pytest.fixture(scope="module")
def booster() -> lightgbm.Booster:
    """Deep, uneven trees, with balanced and lopsided splits."""
    features, labels = load_breast_cancer(return_X_y=True)
    params = {
        "objective": "binary",
        "num_leaves": 31,
        "min_data_in_leaf": 1,
        "min_data_in_bin": 1,
        "verbosity": -1,
    }
    return lightgbm.train(params, lightgbm.Dataset(features, labels), num_boost_round=30)


@pytest.fixture(scope="module")
def predictor(
    booster: lightgbm.Booster, tmp_path_factory: pytest.TempPathFactory
) -> CompiledBoosterPredictor:
    return compile_booster(booster, tmp_path_factory.mktemp("compiled"))


def _rows(count: int) -> np.ndarray:
    return noisy_rows(count, seed=3, missing=0.03)


def test_the_cost_model_keeps_some_branches_and_drops_others(
    booster: lightgbm.Booster, tmp_path: Path
) -> None:
    info = booster.dump_model()["tree_info"]
    shares = left_shares(info)
    assert len(shares) == sum(tree["num_leaves"] - 1 for tree in info)
    root = info[0]["tree_structure"]
    left, right = root["left_child"], root["right_child"]
    left_rows = left.get("internal_count", left.get("leaf_count"))
    right_rows = right.get("internal_count", right.get("leaf_count"))
    assert shares[(0, root["split_index"])] == left_rows / (left_rows + right_rows)
    assert all(0.0 <= share <= 1.0 for share in shares.values())

    booster.save_model(tmp_path / "model.txt")
    forest = parse_to_ast(str(tmp_path / "model.txt"))
    chosen: set[int] = set()
    for tree in forest.trees:
        _choose_branch_free(tree.idx, tree.root_node, shares, chosen)
    splits = [node for tree in forest.trees for node in _split_nodes(tree.root_node)]
    assert 0 < len(chosen) < len(splits)  # both code paths are taken, and checked below


@dataclass
class _Split:
    idx: int
    left: Any
    right: Any
    categorical: bool = False
    is_leaf = False

    @property
    def decision_type(self) -> Any:
        return SimpleNamespace(is_categorical=self.categorical)


LEAF = SimpleNamespace(is_leaf=True)


def test_a_balanced_split_over_a_small_subtree_loses_its_branch() -> None:
    node = _Split(0, _Split(1, LEAF, LEAF), _Split(2, LEAF, LEAF))
    chosen: set[int] = set()
    cost = _choose_branch_free(0, node, {(0, 0): 0.5, (0, 1): 0.5, (0, 2): 0.5}, chosen)
    assert id(node) in chosen
    assert cost == 3.0  # three comparisons and selects


def test_a_predictable_split_above_a_large_subtree_keeps_its_branch() -> None:
    # A chain of balanced splits, each with a two-leaf split beside it: 8 deep, 17 splits.
    chain: list[_Split] = []
    deep: Any = LEAF
    for index in range(1, 9):
        deep = _Split(index, deep, _Split(100 + index, LEAF, LEAF))
        chain.append(deep)
    node = _Split(0, deep, LEAF)
    shares = {(0, index): 0.5 for index in range(200)} | {(0, 0): 0.01}
    chosen: set[int] = set()
    _choose_branch_free(0, node, shares, chosen)
    assert id(node) not in chosen  # 1% mispredicted: cheaper than 17 comparisons
    # Below it, balanced splits over small subtrees lose their branch (2k comparisons
    # against 5.5 + k for the k-th link), and the tall ones keep it.
    assert [id(link) in chosen for link in chain] == [True] * 5 + [False] * 3


def test_categorical_splits_always_keep_their_branch() -> None:
    node = _Split(0, LEAF, LEAF, categorical=True)
    chosen: set[int] = set()
    _choose_branch_free(0, node, {(0, 0): 0.5}, chosen)
    assert chosen == set()


def _split_nodes(node: Any) -> list[Any]:
    if node.is_leaf:
        return []
    return [node, *_split_nodes(node.left), *_split_nodes(node.right)]


@pytest.mark.parametrize(
    "rows",
    [1, TILE_ROWS - 1, TILE_ROWS, TILE_ROWS + 1, 3 * TILE_ROWS + 17, 45_001],
    ids=["one", "tile-1", "tile", "tile+1", "several-tiles", "threaded"],
)
def test_columns_score_as_lightgbm_and_as_the_matrix_entry(
    booster: lightgbm.Booster, predictor: CompiledBoosterPredictor, rows: int
) -> None:
    matrix = _rows(rows)
    expected = booster.predict(matrix)
    # Columns of a row-major matrix are strided views: they must be read correctly too.
    by_columns = predictor.predict_proba_columns([matrix[:, j] for j in range(matrix.shape[1])])
    by_rows = predictor.predict_proba(matrix)
    assert by_columns.shape == (rows, 2)
    np.testing.assert_allclose(by_columns[:, 1], expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(by_columns[:, 0], 1.0 - expected, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(by_columns, by_rows)


def test_a_part_of_longer_columns_is_scored_from_its_first_row(
    booster: lightgbm.Booster, predictor: CompiledBoosterPredictor
) -> None:
    matrix = _rows(5_000)
    columns = [np.ascontiguousarray(matrix[:, j]) for j in range(matrix.shape[1])]
    part = predictor.predict_proba_columns([column[1_234:4_321] for column in columns])
    np.testing.assert_allclose(part[:, 1], booster.predict(matrix[1_234:4_321]), atol=1e-12)


def test_no_rows_give_no_probabilities(predictor: CompiledBoosterPredictor) -> None:
    empty = [np.empty(0) for _ in range(30)]
    assert predictor.predict_proba_columns(empty).shape == (0, 2)


def test_columns_of_the_wrong_count_or_length_are_refused(
    predictor: CompiledBoosterPredictor,
) -> None:
    with pytest.raises(ValueError, match="expected 30 feature columns, got 29"):
        predictor.predict_proba_columns([np.zeros(4)] * 29)
    with pytest.raises(ValueError, match="equal length"):
        predictor.predict_proba_columns([np.zeros(4)] * 29 + [np.zeros(5)])


def test_other_predictors_get_the_columns_as_one_matrix(booster: lightgbm.Booster) -> None:
    features = tuple(FeatureSpec(f"f{j}", "double") for j in range(30))
    model = ServingModel("m", "1", features, ("ABSENT", "PRESENT"), BoosterPredictor(booster))
    matrix = _rows(300)
    by_columns = model.predict_proba_columns([matrix[:, j] for j in range(30)])
    np.testing.assert_allclose(by_columns[:, 1], booster.predict(matrix), atol=1e-12)


def test_lleaves_code_generator_is_restored_after_compiling_even_on_error() -> None:
    decision_node, gen_forest = codegen._gen_decision_node, tree_compiler.gen_forest
    with hooked_codegen({}):
        assert codegen._gen_decision_node is not decision_node
        assert tree_compiler.gen_forest is not gen_forest
    assert (codegen._gen_decision_node, tree_compiler.gen_forest) == (decision_node, gen_forest)
    with pytest.raises(RuntimeError, match="boom"), hooked_codegen({}):
        raise RuntimeError("boom")
    assert (codegen._gen_decision_node, tree_compiler.gen_forest) == (decision_node, gen_forest)


def test_an_untested_lleaves_release_is_not_hooked(monkeypatch: pytest.MonkeyPatch) -> None:
    from modelferry.serving import tree_codegen

    monkeypatch.setattr(tree_codegen, "installed_lleaves", lambda: "1.4.0")
    decision_node, gen_forest = codegen._gen_decision_node, tree_compiler.gen_forest
    refused = r"lleaves 1\.4\.0 is installed.*>=1\.3\.0,<1\.4"
    with pytest.raises(RuntimeError, match=refused), hooked_codegen({}):
        pytest.fail("hooked an untested lleaves")
    assert (codegen._gen_decision_node, tree_compiler.gen_forest) == (decision_node, gen_forest)


def test_changing_the_generated_code_changes_the_cache_key(
    booster: lightgbm.Booster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    compile_booster(booster, tmp_path)
    monkeypatch.setattr(compiled, "CODEGEN_TAG", "another-codegen")
    compile_booster(booster, tmp_path)
    assert len(list(tmp_path.glob("*.o"))) == 2


def test_any_thread_count_gives_the_same_probabilities(
    predictor: CompiledBoosterPredictor,
) -> None:
    matrix = _rows(45_001)
    columns = [matrix[:, j] for j in range(matrix.shape[1])]
    one = predictor.predict_proba_columns(columns, threads=1)
    for threads in (2, 3, 8):
        np.testing.assert_array_equal(
            predictor.predict_proba_columns(columns, threads=threads), one
        )


def test_a_compiled_model_without_the_columns_entry_is_unavailable() -> None:
    class Foreign:  # as a later lleaves might look: no execution engine where 1.3 keeps it
        def num_feature(self) -> int:
            return 30

    with pytest.raises(CompilationUnavailable, match="modelferry_score_columns"):
        CompiledBoosterPredictor(Foreign(), threads=1)
