"""The contenders of the batch benchmark, each run in a process of its own.

    python -m bench.batch.contenders booster --data DIR --booster booster.txt --result r.json
    python -m bench.batch.contenders modelferry --data PATH --tracking-uri URI \
        --model NAME --version V --compiled-cache DIR --output out.parquet --result r.json
    python -m bench.batch.contenders compile --tracking-uri URI --model NAME --version V \
        --compiled-cache DIR --result r.json
    python -m bench.batch.contenders mlflow --data data.csv --tracking-uri URI \
        --model NAME --version V --output out.json --result r.json

- ``booster``, the anchor: the simplest way to score Parquet with LightGBM, read every
  file with `pandas.read_parquet`, then one `Booster.predict` over all rows.
- ``modelferry``: what the ``batch-score`` flow does, without the orchestrator: load the
  registered version with `load_serving_model`, compile its trees with
  `with_compiled_trees` (from the cache, as every run after the first), then `run_batch`
  with the flow's defaults.
- ``compile``: the first run's extra cost: compile the trees into an empty cache.
- ``mlflow``: `mlflow models predict --env-manager local -t csv`, run through MLflow's
  own command line entry point (what the `mlflow` executable calls) in this process, so
  that the moment its model is loaded can be marked.

Each writes its timings, row count and the sum of its positive-class probabilities (to
check that they scored the same rows alike) to the result file. ``load_s`` is the fixed
cost of imports and loading the model; ``score_s`` reading, predicting and writing, which
grows with the input.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any


def score_with_booster(data: Path, booster_file: Path) -> dict[str, Any]:
    """Read all of `data` with pandas, predict every row with one `Booster.predict`."""
    started = time.perf_counter()
    import lightgbm
    import numpy as np
    import pandas as pd

    booster = lightgbm.Booster(model_file=str(booster_file))
    loaded = time.perf_counter()
    frame = pd.read_parquet(data)
    read = time.perf_counter()
    predictions = np.asarray(booster.predict(frame))
    done = time.perf_counter()
    return {
        "rows": len(predictions),
        "load_s": loaded - started,
        "read_s": read - loaded,
        "predict_s": done - read,
        "score_s": done - loaded,
        "positive_sum": float(predictions.sum()),
    }


def compile_trees(tracking_uri: str, model: str, version: str, cache: Path) -> dict[str, Any]:
    """Compile the registered version's trees into `cache`, as the first batch run does."""
    from modelferry.registry import ModelRegistry, TrackingSettings
    from modelferry.serving.model import load_serving_model, with_compiled_trees

    registry = ModelRegistry(TrackingSettings.resolve(tracking_uri))
    serving = load_serving_model(registry, registry.get(model, version))
    started = time.perf_counter()
    compiled = with_compiled_trees(serving, cache)
    done = time.perf_counter()
    return {"compile_s": done - started, "predictor": type(compiled.predictor).__name__}


def score_with_modelferry(
    data: Path, tracking_uri: str, model: str, version: str, output: Path, cache: Path
) -> dict[str, Any]:
    """Load the registered version as the flow does, then `run_batch` into `output`."""
    started = time.perf_counter()
    import pyarrow.parquet as pq

    from modelferry.batch import DEFAULT_CHUNK_ROWS, prediction_columns, run_batch
    from modelferry.registry import ModelRegistry, TrackingSettings
    from modelferry.serving.model import load_serving_model, with_compiled_trees

    registry = ModelRegistry(TrackingSettings.resolve(tracking_uri))
    # As the flow's load-batch-model task: the registered model, its trees compiled.
    serving = with_compiled_trees(load_serving_model(registry, registry.get(model, version)), cache)
    loaded = time.perf_counter()
    # The flow's defaults: DEFAULT_CHUNK_ROWS rows at a time, two files at once.
    result = run_batch(data, serving, output, chunk_rows=DEFAULT_CHUNK_ROWS, max_workers=2)
    done = time.perf_counter()
    if result.failed_files:
        raise RuntimeError(result.summary())
    positive = prediction_columns(serving.class_names)[-1]
    column = pq.read_table(output, columns=[positive]).column(positive)
    return {
        "rows": result.rows_scored,
        "load_s": loaded - started,
        "score_s": done - loaded,
        "positive_sum": float(column.to_numpy().sum()),
        "predictor": type(serving.predictor).__name__,
    }


def score_with_mlflow(
    data: Path, tracking_uri: str, model: str, version: str, output: Path
) -> dict[str, Any]:
    """`mlflow models predict -m models:/MODEL/VERSION --env-manager local -t csv`."""
    started = time.perf_counter()
    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    import mlflow.pyfunc.scoring_server as scoring_server
    from mlflow.cli import cli

    loaded: list[float] = []
    load_model = scoring_server.load_model  # type: ignore[attr-defined]

    def timed_load(*args: Any, **kwargs: Any) -> Any:
        # The command loads the model, then reads the input, predicts and writes.
        model = load_model(*args, **kwargs)
        loaded.append(time.perf_counter())
        return model

    scoring_server.load_model = timed_load  # type: ignore[attr-defined]
    cli.main(
        args=[
            "models", "predict", "-m", f"models:/{model}/{version}", "--env-manager", "local",
            "-i", str(data), "-t", "csv", "-o", str(output),
        ],
        standalone_mode=False,
    )  # fmt: skip
    done = time.perf_counter()
    if not loaded:
        raise RuntimeError("mlflow models predict did not load the model through load_model")
    predictions = json.loads(output.read_text())["predictions"]
    return {"rows": len(predictions), "load_s": loaded[0] - started, "score_s": done - loaded[0]}


def main(argv: list[str] | None = None) -> int:
    """Run one contender and write what it measured as JSON."""
    parser = argparse.ArgumentParser(prog="python -m bench.batch.contenders")
    parser.add_argument("contender", choices=("booster", "modelferry", "mlflow", "compile"))
    parser.add_argument("--data", type=Path, help="a file or folder to score")
    parser.add_argument("--result", type=Path, required=True, help="JSON written here")
    parser.add_argument("--booster", type=Path, help="booster: a LightGBM text model")
    parser.add_argument("--tracking-uri", help="modelferry, mlflow: the MLflow store")
    parser.add_argument("--model", help="modelferry, mlflow: registered model name")
    parser.add_argument("--version", help="modelferry, mlflow: its version")
    parser.add_argument("--output", type=Path, help="modelferry, mlflow: the predictions file")
    parser.add_argument("--compiled-cache", type=Path, help="modelferry, compile: compiled trees")
    args = parser.parse_args(argv)
    registered = (args.tracking_uri, args.model, args.version)
    if args.contender == "compile":
        if None in (*registered, args.compiled_cache):
            parser.error("compile needs --tracking-uri, --model, --version, --compiled-cache")
        measured = compile_trees(*registered, args.compiled_cache)
    elif args.data is None:
        parser.error(f"{args.contender} needs --data")
    elif args.contender == "booster":
        if args.booster is None:
            parser.error("booster needs --booster")
        measured = score_with_booster(args.data, args.booster)
    elif None in (*registered, args.output):
        parser.error(f"{args.contender} needs --tracking-uri, --model, --version, --output")
    elif args.contender == "modelferry":
        if args.compiled_cache is None:
            parser.error("modelferry needs --compiled-cache")
        measured = score_with_modelferry(args.data, *registered, args.output, args.compiled_cache)
    else:
        measured = score_with_mlflow(args.data, *registered, args.output)
    args.result.write_text(json.dumps(measured))
    return 0


if __name__ == "__main__":
    sys.exit(main())
