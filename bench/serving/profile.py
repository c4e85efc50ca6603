"""In-process profile of the online scoring app against the floor: no network, no server.

`python -m bench.serving --profile` runs it: both ASGI apps are called directly, in
interleaved batches, timing this thread's CPU; then each request stage is timed alone and
a cProfile of one-row requests is printed.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson

from bench.common.models import BenchModel
from bench.common.processes import REPO
from bench.serving.payloads import request_body

#: Interleaved batches per app; the minimum is the least disturbed by others.
PROFILE_BATCHES = 40


async def _drive(app: Any, payload: bytes, headers: list[tuple[bytes, bytes]], n: int) -> float:
    """CPU µs per request of `n` POST /score calls straight into an ASGI app (no network)."""
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/score",
        "query_string": b"",
        "headers": [(b"host", b"bench"), (b"content-type", b"application/json"), *headers],
    }
    message = {"type": "http.request", "body": payload, "more_body": False}

    async def receive() -> dict[str, Any]:
        return message

    async def send(message: dict[str, Any]) -> None:
        return None

    started = time.thread_time()
    for _ in range(n):
        await app(scope, receive, send)
    return (time.thread_time() - started) / n * 1e6


def fast_single_row(booster: Any) -> Callable[[np.ndarray], float]:
    """A what-if: LightGBM's single-row "FastConfig" C API, set up once per booster.

    `Booster.predict` parses parameters and builds a predictor on every call; for one row
    that is most of its cost. The C API can do that once. This reaches into
    `lightgbm.basic` internals (`_LIB`, `_safe_call`, `_c_str`), which is fine for a
    measurement; a production version should pin lightgbm and fall back to `predict`.
    """
    import ctypes

    from lightgbm.basic import _LIB, _c_str, _safe_call  # type: ignore[attr-defined]

    handle = ctypes.c_void_p()
    _safe_call(
        _LIB.LGBM_BoosterPredictForMatSingleRowFastInit(
            booster._handle,
            ctypes.c_int(0),  # C_API_PREDICT_NORMAL
            ctypes.c_int(0),  # start_iteration
            ctypes.c_int(-1),  # num_iteration: all
            ctypes.c_int(1),  # C_API_DTYPE_FLOAT64
            ctypes.c_int32(booster.num_feature()),
            _c_str("num_threads=1"),
            ctypes.byref(handle),
        )
    )
    out = np.empty(1, dtype=np.float64)
    out_ptr = out.ctypes.data_as(ctypes.POINTER(ctypes.c_double))
    out_len = ctypes.c_int64()

    def predict(row: np.ndarray) -> float:
        _safe_call(
            _LIB.LGBM_BoosterPredictForMatSingleRowFast(
                handle, row.ctypes.data_as(ctypes.c_void_p), ctypes.byref(out_len), out_ptr
            )
        )
        return float(out[0])

    import weakref

    weakref.finalize(predict, _LIB.LGBM_FastConfigFree, handle)
    return predict


def profile(model: BenchModel, repeats: int = PROFILE_BATCHES) -> str:
    """ScoringApp against the floor in one process: CPU per request, stages, cProfile."""
    import asyncio
    import cProfile
    import io
    import pstats
    import timeit

    import lightgbm
    from pydantic import SecretStr

    from bench.serving.bare_asgi import FloorApp
    from modelferry.endpoints.spec import TrafficSplit
    from modelferry.registry import ModelRegistry, TrackingSettings
    from modelferry.serving.app import ScoringApp
    from modelferry.serving.model import load_serving_model
    from modelferry.serving.payload import parse_request
    from modelferry.serving.routing import RoutingTable

    registry = ModelRegistry(TrackingSettings.resolve(model.tracking_uri))
    serving = load_serving_model(registry, registry.get(model.name, model.version))
    key = "k" * 43
    app = ScoringApp("bench", SecretStr(key))
    app.install(
        RoutingTable.build(
            {"blue": serving, "green": serving}, TrafficSplit({"blue": 90, "green": 10})
        )
    )
    booster = lightgbm.Booster(model_file=str(model.booster_file))
    floor = FloorApp(booster)
    auth = [(b"authorization", f"Bearer {key}".encode())]
    apps = {"(b) floor": (floor, []), "(c) ScoringApp": (app, auth)}
    out = ["## In-process profile", ""]
    out.append(
        f"Each app called straight through ASGI, no network; {repeats} interleaved batches, "
        "CPU time of this thread (time.thread_time)."
    )
    out += ["", "| app | rows | CPU µs/request (min) | (median) |", "|---|---:|---:|---:|"]
    for rows, batch in ((1, 1000), (1000, 5)):
        payload = request_body(model, rows, "input_data")
        samples: dict[str, list[float]] = {name: [] for name in apps}
        for _ in range(repeats):
            for name, (target, headers) in apps.items():
                samples[name].append(asyncio.run(_drive(target, payload, headers, batch)))
        for name, values in samples.items():
            out.append(
                f"| {name} | {rows:,} | {min(values):,.1f} | {statistics.median(values):,.1f} |"
            )

    one = request_body(model, 1, "input_data")
    matrix = parse_request(one, serving.features, 100_000)
    proba = serving.predict_proba(matrix)
    answer = {"predictions": proba, "classes": serving.class_names, "deployment": "blue"}
    rows_data = orjson.loads(one)["input_data"]["data"]
    fast = fast_single_row(booster)
    if not np.isclose(fast(matrix), booster.predict(matrix)[0], rtol=0, atol=1e-12):
        raise RuntimeError("the single-row C API disagrees with Booster.predict")
    stages: list[tuple[str, Callable[[], object]]] = [
        ("orjson.loads (1 row)", lambda: orjson.loads(one)),
        ("np.array(rows, float64) (floor's parse)", lambda: np.array(rows_data, dtype=np.float64)),
        ("parse_request (1 row)", lambda: parse_request(one, serving.features, 100_000)),
        ("Booster.predict(row)", lambda: booster.predict(matrix)),
        ("Booster.predict(row, num_threads=1)", lambda: booster.predict(matrix, num_threads=1)),
        ("what-if: single-row FastConfig C API", lambda: fast(matrix)),
        ("ServingModel.predict_proba (1 row)", lambda: serving.predict_proba(matrix)),
        ("orjson.dumps(answer)", lambda: orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY)),
        ("Telemetry.record", lambda: app.telemetry.record("blue", 200, 0.001, 1)),
    ]  # fmt: skip
    out += ["", "| stage | µs (min of 7) |", "|---|---:|"]
    for label, stage in stages:
        best = min(timeit.repeat(stage, number=2000, repeat=7)) / 2000 * 1e6
        out.append(f"| {label} | {best:.2f} |")

    profiler = cProfile.Profile()
    asyncio.run(_drive(app, one, auth, 2000))
    profiler.enable()
    asyncio.run(_drive(app, one, auth, 20_000))
    profiler.disable()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(20)
    listing = "\n".join(
        line.replace(str(REPO) + "/", "").replace(sys.prefix + "/", "")
        for line in text.getvalue().splitlines()
        if line.strip()
    )
    out += ["", "cProfile of 20,000 one-row requests (tottime; inflates Python-level costs):"]
    out += ["", "```", listing, "```"]
    return "\n".join(out) + "\n"
