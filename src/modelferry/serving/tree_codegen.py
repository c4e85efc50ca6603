"""What modelferry adds to lleaves' code generation: cheaper trees, and columnar input.

lleaves compiles every split to a conditional branch. A branch the CPU mispredicts costs
it about ten times what computing one comparison and picking a side without a jump (a
select) does, and on real data the balanced splits are mispredicted often. So each
subtree is compiled the cheaper of two ways, by a cost model fed with the share of the
training rows that went left at each split (LightGBM records the counts in the model):

- as a branch: one unit, plus `MISPREDICT_COST` units times the chance the branch is
  mispredicted (the smaller of the two shares), plus each side's cost weighted by its
  share;
- without branches: every comparison of the subtree computed and the leaf picked by
  selects, one unit per split.

On the batch benchmark's model this scores 1.45 times as fast as lleaves' own code (and
1.25 times as fast as compiling every subtree up to 3 splits tall without branches).

lleaves reads a row-major matrix, while batch files arrive as one array per column. The
extra entry point `COLUMNS_ENTRY` takes the column arrays as they are and copies a tile of
`TILE_ROWS` rows at a time into a small row-major buffer that stays in the CPU's cache,
then scores the tile with lleaves' own entry point. No matrix of the whole chunk is built,
written to memory and read back.

Both changes hook lleaves' code generator, and only while modelferry compiles:
`hooked_codegen` swaps two of its private functions and restores them on exit. Those
internals are only known for the tested releases (`SUPPORTED_LLEAVES`); with any other
lleaves installed, `unsupported_lleaves` says so and nothing is hooked. The compiled model
is checked against LightGBM before use (see `compiled.py`).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from importlib import metadata
from typing import Any

#: What a mispredicted branch costs, in units of one comparison and select.
MISPREDICT_COST = 10.0

#: Rows copied into the row-major tile at a time: 1,024 rows of 30 doubles are 240 KiB.
TILE_ROWS = 1024

#: Name of the columnar entry point in the compiled object.
COLUMNS_ENTRY = "modelferry_score_columns"

#: What `hooked_codegen` changes in the generated code; part of the compiled-model cache key.
CODEGEN_TAG = f"modelferry-codegen-2:mispredict-{MISPREDICT_COST:g}:tile-{TILE_ROWS}"

#: The share of training rows sent left, by (tree index, split index); see `left_shares`.
LeftShares = Mapping[tuple[int, int], float]

#: The lleaves releases whose private code generator `hooked_codegen` is tested against:
#: at least the first, below the second (the `lleaves~=1.3.0` pin in pyproject.toml).
SUPPORTED_LLEAVES = ((1, 3, 0), (1, 4))
SUPPORTED_LLEAVES_TEXT = ">=1.3.0,<1.4"

# lleaves' code generator is module state; one compilation at a time may hook it.
_HOOK_LOCK = threading.Lock()


def left_shares(tree_info: Sequence[Mapping[str, Any]]) -> dict[tuple[int, int], float]:
    """Each split's share of training rows sent left, from `Booster.dump_model()["tree_info"]`.

    A split whose counts are missing or zero gets 0.5: the hardest branch to predict.
    """
    shares: dict[tuple[int, int], float] = {}
    for tree, info in enumerate(tree_info):
        for node in split_nodes(info["tree_structure"]):
            counts = (_count(node["left_child"]), _count(node["right_child"]))
            total = sum(counts)
            shares[(tree, int(node["split_index"]))] = counts[0] / total if total > 0 else 0.5
    return shares


def split_nodes(root: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    """Every split (not leaf) of one tree of `Booster.dump_model()`, parents first."""
    stack = [root]
    while stack:
        node = stack.pop()
        if "split_index" in node:
            yield node
            stack += [node["left_child"], node["right_child"]]


def _count(node: Mapping[str, Any]) -> float:
    return float(node.get("internal_count", node.get("leaf_count", 0)) or 0)


def unsupported_lleaves(version: str | None = None) -> str | None:
    """Why the installed lleaves (or `version`) must not be hooked; None when it may be.

    A release outside `SUPPORTED_LLEAVES` may have renamed or changed the private
    functions `hooked_codegen` replaces, so it is not hooked at all.
    """
    if version is None:
        version = installed_lleaves()
        if version is None:
            return "lleaves is not installed"
    release = _release(version)
    low, high = SUPPORTED_LLEAVES
    if release is not None and low <= release < high:
        return None
    return (
        f"lleaves {version} is installed, but modelferry's code generator hooks lleaves' "
        f"internals and supports only lleaves {SUPPORTED_LLEAVES_TEXT}"
    )


def installed_lleaves() -> str | None:
    """The installed lleaves version, or None."""
    try:
        return metadata.version("lleaves")
    except metadata.PackageNotFoundError:
        return None


def _release(version: str) -> tuple[int, ...] | None:
    """The numbers of a final release (`1.3.0`, `1.3.0.post1`).

    None for anything else, pre-releases and development builds included.
    """
    found = re.fullmatch(r"(\d+(?:\.\d+)*)(?:\.post\d+)?", version.strip())
    return tuple(int(part) for part in found.group(1).split(".")) if found else None


@contextmanager
def hooked_codegen(shares: LeftShares) -> Iterator[None]:
    """While inside, lleaves compiles with branch-free subtrees and a columnar entry point.

    The cost model picks the branch-free subtrees from the model's `left_shares`.

    Raises:
        RuntimeError: the installed lleaves is outside `SUPPORTED_LLEAVES` (nothing is hooked).
    """
    refused = unsupported_lleaves()
    if refused is not None:
        raise RuntimeError(refused)
    from lleaves.compiler import tree_compiler
    from lleaves.compiler.codegen import codegen

    with _HOOK_LOCK:
        decision_node = codegen._gen_decision_node
        gen_forest = tree_compiler.gen_forest
        branch_free: set[int] = set()  # id() of the nodes compiled without branches

        def gen_decision_node(func: Any, block: Any, node: Any, use_fp64: bool) -> None:
            if id(node) in branch_free:
                builder = codegen.ir.IRBuilder(block)
                builder.ret(_select_tree(codegen, func, builder, node, use_fp64))
            else:
                decision_node(func, block, node, use_fp64)

        def gen_forest_with_columns(
            forest: Any, module: Any, fblocksize: int, root_name: str, use_fp64: bool
        ) -> None:
            for tree in forest.trees:
                _choose_branch_free(tree.idx, tree.root_node, shares, branch_free)
            gen_forest(forest, module, fblocksize, root_name, use_fp64)
            _add_columns_entry(module, root_name, forest.n_args)

        codegen._gen_decision_node = gen_decision_node
        tree_compiler.gen_forest = gen_forest_with_columns
        try:
            yield
        finally:
            codegen._gen_decision_node = decision_node
            tree_compiler.gen_forest = gen_forest


def _choose_branch_free(tree: int, node: Any, shares: LeftShares, chosen: set[int]) -> float:
    """Add to `chosen` the subtrees cheaper without branches; return `node`'s cost."""
    if node.is_leaf:
        return 0.0
    left = _choose_branch_free(tree, node.left, shares, chosen)
    right = _choose_branch_free(tree, node.right, shares, chosen)
    share = shares.get((tree, node.idx), 0.5)
    branched = 1.0 + MISPREDICT_COST * min(share, 1.0 - share) + share * left
    branched += (1.0 - share) * right
    if _numerical(node):
        flat = float(_splits(node))
        if flat <= branched:
            chosen.add(id(node))
            return flat
    return branched


def _splits(node: Any) -> int:
    if node.is_leaf:
        return 0
    return 1 + _splits(node.left) + _splits(node.right)


def _numerical(node: Any) -> bool:
    if node.is_leaf:
        return True
    return (
        not node.decision_type.is_categorical and _numerical(node.left) and _numerical(node.right)
    )


def _select_tree(codegen: Any, func: Any, builder: Any, node: Any, use_fp64: bool) -> Any:
    """The subtree's leaf value, as selects over every comparison in it (no branch)."""
    if node.is_leaf:
        return codegen.get_fdtype_const(node.value, use_fp64)
    goes_left = codegen._populate_numerical_node_block(func, builder, node, use_fp64)
    left = _select_tree(codegen, func, builder, node.left, use_fp64)
    right = _select_tree(codegen, func, builder, node.right, use_fp64)
    return builder.select(goes_left, left, right)


def _add_columns_entry(module: Any, root_name: str, n_features: int) -> None:
    """`void COLUMNS_ENTRY(double **columns, double *out, i64 start, i64 end, double *tile)`.

    Scores rows [start, end) of the columns into out[start:end], `TILE_ROWS` rows at a
    time: the tile's rows are copied into `tile` (TILE_ROWS x n_features doubles, the
    caller's) one column at a time, so each column is read in order, then lleaves' entry
    point scores the tile.
    """
    from llvmlite import ir

    double = ir.DoubleType()
    i32 = ir.IntType(32)
    i64 = ir.IntType(64)
    root = module.get_global(root_name)
    func_type = ir.FunctionType(
        ir.VoidType(),
        (double.as_pointer().as_pointer(), double.as_pointer(), i64, i64, double.as_pointer()),
    )
    func = ir.Function(module, func_type, name=COLUMNS_ENTRY)
    columns, out, start, end, tile = func.args
    for pointer in (columns, out, tile):
        pointer.add_attribute("noalias")

    entry = func.append_basic_block("entry")
    tile_head = func.append_basic_block("tile-head")
    column_head = func.append_basic_block("column-head")
    copy = func.append_basic_block("copy")
    column_done = func.append_basic_block("column-done")
    score = func.append_basic_block("score-tile")
    done = func.append_basic_block("done")
    zero = ir.Constant(i64, 0)
    one = ir.Constant(i64, 1)
    width = ir.Constant(i64, n_features)

    builder = ir.IRBuilder(entry)
    builder.branch(tile_head)

    # tile-head: first = start, start + TILE_ROWS, ... while first < end
    builder = ir.IRBuilder(tile_head)
    first = builder.phi(i64, "first")
    first.add_incoming(start, entry)
    left = builder.sub(end, first)
    full = builder.icmp_signed("<", ir.Constant(i64, TILE_ROWS), left)
    rows = builder.select(full, ir.Constant(i64, TILE_ROWS), left)
    builder.cbranch(builder.icmp_signed("<", first, end), column_head, done)

    # column-head: for each feature f, its column from row `first` on
    builder = ir.IRBuilder(column_head)
    feature = builder.phi(i64, "feature")
    feature.add_incoming(zero, tile_head)
    base = builder.gep(builder.load(builder.gep(columns, [feature])), [first])
    builder.branch(copy)

    # copy: tile[row * n_features + f] = column[row], reading the column sequentially
    builder = ir.IRBuilder(copy)
    row = builder.phi(i64, "row")
    row.add_incoming(zero, column_head)
    value = builder.load(builder.gep(base, [row]))
    builder.store(value, builder.gep(tile, [builder.add(builder.mul(row, width), feature)]))
    next_row = builder.add(row, one)
    row.add_incoming(next_row, copy)
    builder.cbranch(builder.icmp_signed("<", next_row, rows), copy, column_done)

    builder = ir.IRBuilder(column_done)
    next_feature = builder.add(feature, one)
    feature.add_incoming(next_feature, column_done)
    builder.cbranch(builder.icmp_signed("<", next_feature, width), column_head, score)

    # score-tile: lleaves' entry point on the tile, into out[first:first + rows]
    builder = ir.IRBuilder(score)
    tile_out = builder.gep(out, [first])
    builder.call(root, [tile, tile_out, ir.Constant(i32, 0), builder.trunc(rows, i32)])
    first.add_incoming(builder.add(first, ir.Constant(i64, TILE_ROWS)), score)
    builder.branch(tile_head)

    ir.IRBuilder(done).ret_void()
