"""LightGBM trees compiled to native code (lleaves) for large batches, checked before use.

LightGBM's `Booster.predict` walks each tree as data; lleaves turns the model into machine
code through LLVM, which scores a batch several times faster with the same results, and
`tree_codegen` makes that code cheaper still and able to read columns. The compiled code
is specialised for this CPU, so it is cached per model, per CPU, per compiler version and
per version of modelferry's code generation, and compiled again when any of them changes.

Nothing compiled is trusted blindly. A cached object file is loaded only if its bytes
match the checksum written beside it (LLVM aborts the whole process on a damaged one),
and before a compiled model is used it must give the same probabilities as LightGBM on
probe rows that take both sides of every split, and the missing-value side. When the
compiler is not installed, compilation fails, or the probe disagrees, the caller keeps
LightGBM's own predictor and is told why.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from modelferry.serving.tree_codegen import (
    CODEGEN_TAG,
    COLUMNS_ENTRY,
    TILE_ROWS,
    LeftShares,
    hooked_codegen,
    left_shares,
    split_nodes,
    unsupported_lleaves,
)

logger = logging.getLogger(__name__)

# Below this many rows, a second thread costs more to start than it saves.
_SINGLE_THREAD_ROWS = 20_000

#: Environment variable naming the folder of compiled models.
COMPILED_MODELS_ENV = "MODELFERRY_COMPILED_MODELS"

#: How closely a compiled model must match LightGBM on the probe rows.
PROBE_TOLERANCE = 1e-9

#: Probe rows scored by both predictors before a compiled model is used.
PROBE_ROWS = 4_096


# void score_columns(double **columns, double *out, int64 start, int64 end, double *tile)
_COLUMNS_SIGNATURE = ctypes.CFUNCTYPE(
    None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p
)


class CompilationUnavailable(RuntimeError):
    """The trees cannot be compiled here, or the compiled code disagrees with LightGBM."""


class CompiledBoosterPredictor:
    """Class probabilities from a binary LightGBM model compiled to native code.

    Thread-safe: the compiled functions keep no state, and release the GIL while they run.
    """

    def __init__(self, compiled: Any, threads: int) -> None:
        """Wrap an `lleaves.Model` that `compile_booster` compiled."""
        self._compiled = compiled
        self._threads = max(1, threads)
        self._features = int(compiled.num_feature())
        engine = getattr(compiled, "_execution_engine", None)  # lleaves 1.3 keeps it here
        address = engine.get_function_address(COLUMNS_ENTRY) if engine is not None else 0
        if not address:
            raise CompilationUnavailable(f"the compiled object lacks {COLUMNS_ENTRY}")
        self._score_columns = _COLUMNS_SIGNATURE(address)

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """Probabilities of class 0 and class 1 for each row."""
        rows = features.shape[0]
        jobs = 1 if rows < _SINGLE_THREAD_ROWS else self._threads
        return both_classes(self._compiled.predict(features, n_jobs=jobs))

    def predict_proba_columns(
        self, columns: Sequence[np.ndarray], *, threads: int | None = None
    ) -> np.ndarray:
        """Probabilities of class 0 and class 1 for one float64 array per feature.

        The columns are read where they are; none is copied unless it is not a contiguous
        float64 array. `threads` (default: the predictor's) split a large batch; callers
        that already score several batches at once pass fewer.
        """
        if len(columns) != self._features:
            raise ValueError(f"expected {self._features} feature columns, got {len(columns)}")
        arrays = [np.ascontiguousarray(column, dtype=np.float64) for column in columns]
        rows = len(arrays[0])
        if any(array.shape != (rows,) for array in arrays):
            raise ValueError("feature columns must be one-dimensional and of equal length")
        pointers = (ctypes.c_void_p * len(arrays))(*(array.ctypes.data for array in arrays))
        positive = np.empty(rows, dtype=np.float64)

        def score(start: int, end: int) -> None:
            tile = np.empty(TILE_ROWS * self._features, dtype=np.float64)
            self._score_columns(pointers, positive.ctypes.data, start, end, tile.ctypes.data)

        jobs = 1 if rows < _SINGLE_THREAD_ROWS else max(1, threads or self._threads)
        step = -(-rows // jobs) if rows else 1
        bounds = [(start, min(start + step, rows)) for start in range(0, rows, step)]
        if len(bounds) <= 1:
            score(0, rows)
        else:
            helpers = [threading.Thread(target=score, args=part) for part in bounds[1:]]
            for helper in helpers:
                helper.start()
            score(*bounds[0])
            for helper in helpers:
                helper.join()
        return both_classes(positive)


def both_classes(positive: np.ndarray) -> np.ndarray:
    """Probabilities of class 0 and class 1, shape (rows, 2), from class 1's."""
    out = np.empty((len(positive), 2), dtype=np.float64)
    out[:, 1] = positive
    np.subtract(1.0, positive, out=out[:, 0])
    return out


def last_iteration(booster: Any) -> int:
    """The iteration `Booster.predict` should stop at: the best one, else -1 (every tree)."""
    best = int(getattr(booster, "best_iteration", 0) or 0)
    return best if best > 0 else -1


def compile_booster(
    booster: Any, cache_dir: Path, *, threads: int | None = None
) -> CompiledBoosterPredictor:
    """Compile a binary LightGBM `Booster` (or load it from `cache_dir`), then check it.

    Args:
        booster: a trained `lightgbm.Booster` of a binary objective. Its best iteration,
            when it has one, is the last tree compiled, as `Booster.predict` would use.
        cache_dir: where compiled models are kept, one file per model, CPU and compiler.
        threads: threads per large batch; default every core.

    Raises:
        CompilationUnavailable: lleaves is not installed or is a release outside the
            tested range (`SUPPORTED_LLEAVES`), the model is not binary, the
            compiler failed, or the compiled model disagrees with LightGBM on the probe
            rows, or `cache_dir` cannot be created. The message says which; LightGBM's own
            predictor still works.
    """
    try:
        import lleaves
    except ImportError as exc:
        raise CompilationUnavailable("lleaves is not installed") from exc
    refused = unsupported_lleaves()
    if refused is not None:
        raise CompilationUnavailable(refused)
    if booster.num_model_per_iteration() != 1:
        raise CompilationUnavailable("only binary models are compiled")
    iterations = last_iteration(booster)
    model_text = booster.model_to_string(num_iteration=iterations)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CompilationUnavailable(
            f"cannot create the compiled-model folder {cache_dir}: {exc.strerror or exc}; "
            f"point {COMPILED_MODELS_ENV} at a writable folder"
        ) from exc
    cached = cache_dir / f"{_cache_key(model_text)}.o"
    threads = threads or os.cpu_count() or 1
    # One dump of the trees compiled: it feeds the code generator and the probe rows.
    tree_info = booster.dump_model(num_iteration=iterations)["tree_info"]
    shares = left_shares(tree_info)
    with _model_file(model_text) as model_file:
        if _intact(cached):
            try:
                loaded = _compiled(lleaves, model_file, shares, lambda m: m.compile(str(cached)))
                loaded_predictor = CompiledBoosterPredictor(loaded, threads)
                return _checked(loaded_predictor, booster, iterations, tree_info)
            except CompilationUnavailable as exc:
                # A foreign or stale cache file: drop it and compile afresh.
                logger.warning("Compiled model %s is unusable (%s); compiling again", cached, exc)
        elif cached.exists():
            logger.warning("Compiled model %s fails its checksum; compiling again", cached)
        _discard(cached)
        fresh = _compiled(lleaves, model_file, shares, lambda m: _compile_into(m, cached))
        try:
            return _checked(
                CompiledBoosterPredictor(fresh, threads), booster, iterations, tree_info
            )
        except CompilationUnavailable:
            _discard(cached)
            raise


def _compiled(
    lleaves: Any, model_file: Path, shares: LeftShares, compile: Callable[[Any], None]
) -> Any:
    """An `lleaves.Model` of `model_file`, compiled (or loaded) by `compile`."""
    try:
        model = lleaves.Model(model_file=str(model_file))
        with hooked_codegen(shares):
            compile(model)
    except Exception as exc:  # LLVM and lleaves raise many kinds; all mean "not here"
        raise CompilationUnavailable(f"compiling the trees failed: {exc}") from exc
    return model


def _compile_into(compiled: Any, cached: Path) -> None:
    """Compile into `cached` and its checksum file, each published atomically.

    lleaves writes its cache file in place; two processes compiling the same model at once
    must never load each other's half-written file. The checksum goes first: a reader
    that finds the new checksum beside the old object refuses it and compiles itself.
    """
    partial = cached.with_name(f".{cached.name}.{os.getpid()}.{threading.get_ident()}")
    partial_sum = partial.with_suffix(".sha256")
    try:
        compiled.compile(cache=str(partial))
        partial_sum.write_text(_digest(partial))
        os.replace(partial_sum, _checksum_file(cached))
        os.replace(partial, cached)
    finally:
        partial.unlink(missing_ok=True)
        partial_sum.unlink(missing_ok=True)


def _intact(cached: Path) -> bool:
    """Whether `cached` exists and its bytes match the checksum written beside it."""
    try:
        return _checksum_file(cached).read_text().strip() == _digest(cached)
    except OSError:  # either file missing or unreadable
        return False


def _discard(cached: Path) -> None:
    cached.unlink(missing_ok=True)
    _checksum_file(cached).unlink(missing_ok=True)


def _checksum_file(cached: Path) -> Path:
    return cached.with_suffix(".sha256")


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _checked(
    predictor: CompiledBoosterPredictor,
    booster: Any,
    iterations: int,
    tree_info: Sequence[Mapping[str, Any]],
) -> CompiledBoosterPredictor:
    """`predictor`, once it has matched LightGBM on the probe rows."""
    probe = probe_rows(booster, tree_info=tree_info)
    expected = booster.predict(probe, num_iteration=iterations)
    by_rows = predictor.predict_proba(probe)[:, 1]
    by_columns = predictor.predict_proba_columns(list(probe.T))[:, 1]
    worst = float(max(np.max(np.abs(by_rows - expected)), np.max(np.abs(by_columns - expected))))
    if not worst <= PROBE_TOLERANCE:  # also catches NaN
        raise CompilationUnavailable(
            f"the compiled trees differ from LightGBM by up to {worst:.3g} on probe rows "
            f"(allowed {PROBE_TOLERANCE:g})"
        )
    return predictor


def probe_rows(
    booster: Any,
    rows: int = PROBE_ROWS,
    seed: int = 0,
    *,
    tree_info: Sequence[Mapping[str, Any]] | None = None,
) -> np.ndarray:
    """Rows that send the trees down both sides of every split, and the missing side.

    For each feature, every threshold the model splits it at appears at least once just
    below it, at it (LightGBM sends that left) and just above it, and so does NaN; the
    values are shuffled independently per feature, so they meet in varied combinations.
    Features no tree splits on get zeros. There are `rows` rows, or more if a feature
    needs more to show every value. `tree_info` is the booster's
    ``dump_model()["tree_info"]`` when the caller already has it.
    """
    rng = np.random.default_rng(seed)
    if tree_info is None:
        tree_info = booster.dump_model()["tree_info"]
    thresholds = _split_thresholds(tree_info)
    needed = max((3 * len(values) + 1 for values in thresholds.values()), default=0)
    matrix = np.zeros((max(rows, needed), booster.num_feature()), dtype=np.float64)
    for feature, values in thresholds.items():
        points = np.asarray(sorted(values), dtype=np.float64)
        every = np.concatenate(
            [np.nextafter(points, -np.inf), points, np.nextafter(points, np.inf), [np.nan]]
        )
        matrix[:, feature] = rng.permutation(np.resize(every, len(matrix)))
    return matrix


def _split_thresholds(tree_info: Sequence[Mapping[str, Any]]) -> dict[int, set[float]]:
    found: dict[int, set[float]] = {}
    for tree in tree_info:
        for node in split_nodes(tree["tree_structure"]):
            threshold = node.get("threshold")
            if isinstance(threshold, int | float):
                found.setdefault(int(node["split_feature"]), set()).add(float(threshold))
    return found


def _cache_key(model_text: str) -> str:
    """The model, this CPU and the compiler versions: compiled code is only valid for all."""
    digest = hashlib.sha256(model_text.encode())
    for part in (
        platform.machine(),
        _cpu_name(),
        _version("lleaves"),
        _version("llvmlite"),
        CODEGEN_TAG,
    ):
        digest.update(b"\0" + part.encode())
    return digest.hexdigest()[:32]


def _cpu_name() -> str:
    try:
        import llvmlite.binding as llvm

        return f"{llvm.get_host_cpu_name()}:{llvm.get_host_cpu_features().flatten()}"
    except Exception:  # no llvmlite, or a build without host introspection
        return "unknown-cpu"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "absent"


@contextmanager
def _model_file(text: str) -> Iterator[Path]:
    """The model text in a temporary file (lleaves reads a path); the cache stays untouched."""
    handle, name = tempfile.mkstemp(prefix="modelferry-model-", suffix=".txt")
    path = Path(name)
    try:
        with os.fdopen(handle, "w") as stream:
            stream.write(text)
        yield path
    finally:
        path.unlink(missing_ok=True)
