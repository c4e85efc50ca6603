"""Batch scoring throughput and memory: raw `Booster.predict`, modelferry, MLflow's CLI.

    .venv/bin/python -m bench.batch [--rows 10000000] [--files 10] [--mlflow-rows 10000000]

Trains and registers the benchmark model (as `bench.serving` does), writes `--rows` rows
of its 30 float features to `--files` Parquet files and `--mlflow-rows` rows to one CSV
(numpy, fixed seed, in a temporary folder), compiles the model's trees once into a cache
(as the first batch run does; timed apart), then scores them, each contender in a
process of its own, started from a small launcher that reports its peak RSS:

- (a) the anchor on the Parquet files: `pandas.read_parquet` of all files, then one
  `Booster.predict` over every row;
- (b) modelferry on the Parquet files: the registered version loaded with
  `load_serving_model` and `with_compiled_trees` (from the cache), scored with
  `run_batch` and the `batch-score` flow's defaults, predictions written to one Parquet
  file;
- (c) `mlflow models predict --env-manager local -t csv` on the CSV (its command line
  entry point, run in-process so that the end of its model loading can be timed). It
  reads the whole CSV into memory, about 1.1 GB per million rows: give it the largest
  input the machine holds, as the target is against MLflow on its largest input;
- (d) modelferry, as (b), on the same CSV.

Rounds interleave the contenders, swapping the order of each pair every round, so that
other work on the machine slows each alike; ratios are geometric means over the rounds.
Each contender's input is read once just before it starts, so that each starts with it in
the page cache whatever ran before. Read the ratios, not the absolutes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.batch.data import write_csv, write_parquet_files
from bench.batch.report import BatchRun, Contender, batch_report
from bench.common.lifecycle import interrupt_on_termination, log, work_dir
from bench.common.machine import load_average, machine_busy_s, machine_info, others_cpu_percent
from bench.common.models import BenchModel, train_and_register, tree_shape
from bench.common.processes import start_process, tail

PACKAGES = ("lightgbm", "mlflow", "pyarrow", "pandas", "numpy")

PARQUET_INPUT = "Parquet"
CSV_INPUT = "CSV"
CONTENDERS = (
    Contender("booster", "(a) pandas.read_parquet + Booster.predict", PARQUET_INPUT),
    Contender("modelferry", "(b) modelferry run_batch", PARQUET_INPUT),
    Contender("mlflow", "(c) mlflow models predict -t csv", CSV_INPUT),
    Contender("modelferry_csv", "(d) modelferry run_batch", CSV_INPUT),
)
# Probabilities from two contenders must agree this closely, summed over every row.
_SUM_TOLERANCE = 1e-9
# The contenders that read the CSV; the others read the Parquet folder.
_CSV_KEYS = frozenset({"mlflow", "modelferry_csv"})
_READ_BLOCK = 16 << 20


_CONTENDER = [sys.executable, "-m", "bench.batch.contenders"]
# Trees compiled by `with_compiled_trees`; anything else means (b) and (d) did not use them.
_COMPILED = "CompiledBoosterPredictor"


def _registered(model: BenchModel) -> list[str]:
    return [
        "--tracking-uri", model.tracking_uri, "--model", model.name, "--version", model.version,
    ]  # fmt: skip


def _command(key: str, model: BenchModel, data: Path, csv: Path, out: Path) -> list[str]:
    """The command line of one contender; `out` is where it writes its predictions."""
    registered = [*_registered(model), "--output", str(out)]
    cache = ["--compiled-cache", str(_compiled_cache(out.parent))]
    if key == "booster":
        return [*_CONTENDER, "booster", "--data", str(data), "--booster", str(model.booster_file)]
    if key == "modelferry":
        return [*_CONTENDER, "modelferry", "--data", str(data), *registered, *cache]
    if key == "modelferry_csv":
        return [*_CONTENDER, "modelferry", "--data", str(csv), *registered, *cache]
    return [*_CONTENDER, "mlflow", "--data", str(csv), *registered]


def _compiled_cache(workdir: Path) -> Path:
    return workdir / "compiled-models"


def compile_once(model: BenchModel, workdir: Path) -> dict[str, Any]:
    """Compile the trees into the empty cache, as a first batch run would; its cost."""
    result = workdir / "compile.result.json"
    command = [
        *_CONTENDER, "compile", *_registered(model),
        "--compiled-cache", str(_compiled_cache(workdir)), "--result", str(result),
    ]  # fmt: skip
    log_file = workdir / "compile.log"
    with contextlib.ExitStack() as stack:
        process = start_process(stack, command, log_file, dict(os.environ))
        process.wait()
    if process.returncode != 0:
        raise RuntimeError(f"compiling the trees failed ({process.returncode}):\n{tail(log_file)}")
    compiled: dict[str, Any] = json.loads(result.read_text())
    if compiled["predictor"] != _COMPILED:
        raise RuntimeError(
            f"the trees were not compiled (predictor {compiled['predictor']}):\n{tail(log_file)}"
        )
    return compiled


def run_contender(
    key: str, round_: int, model: BenchModel, data: Path, csv: Path, workdir: Path
) -> tuple[BatchRun, dict[str, Any]]:
    """Run one contender under the launcher; what it used, and what it reported itself."""
    name = f"{key}-{round_}"
    usage_file, result_file = workdir / f"{name}.usage.json", workdir / f"{name}.result.json"
    out = workdir / f"{name}.{'json' if key == 'mlflow' else 'parquet'}"
    command = [*_command(key, model, data, csv, out), "--result", str(result_file)]
    launcher = [sys.executable, "-m", "bench.common.peak_rss", str(usage_file), "--", *command]
    env = {**os.environ, "MLFLOW_TRACKING_URI": model.tracking_uri}
    log_file = workdir / f"{name}.log"
    read_through(csv if key in _CSV_KEYS else data)
    busy_before = machine_busy_s()
    with contextlib.ExitStack() as stack:
        process = start_process(stack, launcher, log_file, env)
        process.wait()
    busy = machine_busy_s() - busy_before
    if process.returncode != 0:
        raise RuntimeError(f"{key} failed ({process.returncode}):\n{tail(log_file)}")
    usage = json.loads(usage_file.read_text())
    reported = json.loads(result_file.read_text())
    out.unlink(missing_ok=True)  # the predictions were checked; free the disk
    run = BatchRun(
        contender=key,
        round=round_,
        rows=int(reported["rows"]),
        score_s=float(reported["score_s"]),
        process_s=float(usage["wall_s"]),
        cpu_s=float(usage["cpu_s"]),
        peak_rss_mb=usage["max_rss_kib"] * 1024 / 1e6,
        others_cpu_percent=others_cpu_percent(busy, usage["cpu_s"], usage["wall_s"]),
        read_s=reported.get("read_s"),
        predict_s=reported.get("predict_s"),
    )
    return run, reported


def read_through(path: Path) -> None:
    """Read a file, or every file of a folder, once, so that it starts in the page cache.

    Every contender starts alike: MLflow's tens of GB (and its CSV) would otherwise push
    the Parquet files out of the cache, and whoever ran next would read them from disk.
    """
    for file in sorted(path.iterdir()) if path.is_dir() else [path]:
        with file.open("rb", buffering=0) as stream:
            while stream.read(_READ_BLOCK):
                pass


def _check(key: str, reported: dict[str, Any], rows: int, sums: dict[str, float]) -> None:
    """Every contender scored every row; probability sums agree where they are comparable."""
    if reported["rows"] != rows:
        raise RuntimeError(f"{key} scored {reported['rows']:,} rows, not {rows:,}")
    if reported.get("predictor", _COMPILED) != _COMPILED:
        raise RuntimeError(f"{key} scored with {reported['predictor']}, not the compiled trees")
    if "positive_sum" in reported:
        sums[key] = reported["positive_sum"]
        if len(set(sums) & {"booster", "modelferry"}) == 2 and not math.isclose(
            sums["booster"], sums["modelferry"], rel_tol=_SUM_TOLERANCE
        ):
            raise RuntimeError(f"(a) and (b) disagree: probability sums {sums}")


def measure(
    args: argparse.Namespace, info: dict[str, str], workdir: Path, model: BenchModel
) -> str:
    """Write the inputs, run every contender each round, and return the Markdown report."""
    data = workdir / "parquet"
    log(f"writing {args.rows:,} rows to {args.files} Parquet file(s)")
    write_parquet_files(model, data, args.rows, args.files)
    sizes = {"Parquet on disk": sum(p.stat().st_size for p in data.iterdir())}
    csv = workdir / "mlflow-input.csv"
    pairs = [("booster", "modelferry")]
    if not args.skip_mlflow:
        sizes["CSV on disk"] = write_csv(model, csv, args.mlflow_rows).stat().st_size
        pairs.append(("mlflow", "modelferry_csv"))
    log("compiling the trees once into the cache, as the first batch run does")
    compile_s = compile_once(model, workdir)["compile_s"]
    log(f"compiled in {compile_s:.1f} s")
    results: list[BatchRun] = []
    sums: dict[str, float] = {}
    for round_ in range(1, args.rounds + 1):
        for pair in pairs:
            order = pair if round_ % 2 else pair[::-1]
            for key in order:
                run, reported = run_contender(key, round_, model, data, csv, workdir)
                expected = args.rows if key in ("booster", "modelferry") else args.mlflow_rows
                _check(key, reported, expected, sums)
                results.append(run)
                log(
                    f"round {round_} {key:14} {run.rows_per_s:11,.0f} rows/s  "
                    f"scoring {run.score_s:6.1f} s  process {run.process_s:6.1f} s  "
                    f"peak {run.peak_rss_mb:6,.0f} MB  others {run.others_cpu_percent:3.0f}%"
                )
    command = " ".join(["python", "-m", "bench.batch", *sys.argv[1:]])
    notes = [
        f"command: {command}",
        f"{args.rounds} round(s); within each, (a)/(b) and then (c)/(d) back to back, "
        "their order swapped every round; a ratio is the geometric mean of the rounds' ratios",
        "each contender's input was read once just before it started (in the page cache)",
        ", ".join(f"{k}: {v / 1e6:,.0f} MB" for k, v in sizes.items()),
        "peak RSS: the largest process of each contender (wait4's ru_maxrss), MB = 10^6 bytes",
        "scoring s: reading, predicting and writing, after imports and model loading "
        "(the anchor (a) writes nothing); process s: the whole process",
        "(c) answers class labels (MLflow's pyfunc); (a), (b), (d) answer probabilities; "
        "(a) and (b) agreed on the sum of every row's probability",
        f"(b), (d): the trees compiled to native code, loaded from the cache; compiling them "
        f"into the empty cache beforehand took {compile_s:.1f} s (a first run's extra cost)",
        f"load average at end: {load_average()}",
    ]
    if args.json is not None:
        args.json.write_text(
            json.dumps({"machine": info, "runs": [asdict(r) for r in results]}, indent=2)
        )
    return batch_report(info, results, CONTENDERS, notes)


def main(argv: list[str] | None = None) -> int:
    """Run the batch benchmark and print the Markdown report."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.batch",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--rows", type=int, default=10_000_000, help="Parquet rows for (a), (b) (10,000,000)"
    )
    parser.add_argument("--files", type=int, default=10, help="Parquet files to spread them (10)")
    parser.add_argument(
        "--mlflow-rows", type=int, default=10_000_000, help="CSV rows for (c), (d) (10,000,000)"
    )
    parser.add_argument(
        "--rounds", type=int, default=2, help="rounds of every contender; even is fairer (2)"
    )
    parser.add_argument("--skip-mlflow", action="store_true", help="run (a) and (b) only")
    parser.add_argument("--json", type=Path, help="also write every run as JSON here")
    parser.add_argument(
        "--keep-data",
        action="store_true",
        help="keep the work dir (inputs, MLflow store, logs); its path is printed on stderr",
    )
    args = parser.parse_args(argv)
    if args.rows < args.files or args.files < 1 or args.mlflow_rows < 1 or args.rounds < 1:
        parser.error("need --files >= 1, --rows >= --files, --mlflow-rows >= 1, --rounds >= 1")
    interrupt_on_termination()

    info = machine_info(PACKAGES)
    with contextlib.ExitStack() as stack:
        workdir = work_dir(stack, "mf-bench-batch-", args.keep_data)
        log(f"work dir {workdir}")
        log("training and registering the model")
        model = train_and_register(workdir)
        info["model"] = tree_shape(model.booster_file)
        print(measure(args, info, workdir, model))
        log("done")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; contenders stopped", file=sys.stderr)
        sys.exit(130)
