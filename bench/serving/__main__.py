"""Online scoring throughput and latency: MLflow's server, the floor, and modelferry.

    .venv/bin/python -m bench.serving [--rounds 3] [--duration 10] [--json out.json]

Trains the benchmark model (LightGBM, 100 trees, up to 31 leaves, 30 features), logs and
registers it in a temporary MLflow SQLite store, then starts three servers of it:

- (a) `mlflow models serve --env-manager local` (MLflow's own scoring server);
- (b) `bench.serving.bare_asgi`, the floor: orjson + numpy + `Booster.predict` under uvicorn;
- (c) a modelferry local online endpoint (key auth, validation, blue 90 / green 10 over
  two deployments of the model, metrics on), started through `LocalEndpointBackend`.

Each scenario loads each server with wrk, one server at a time, after a warm-up; rounds
rotate the server order so that drift in the machine's load hits every server alike.
Other work on the machine slows every server, so read the ratios, not the absolutes; the
"others" column says how much CPU the rest of the machine used during each run.
Every server process is stopped at exit, also on failure or Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from dataclasses import asdict
from pathlib import Path

from bench.common.lifecycle import interrupt_on_termination, log, work_dir
from bench.common.machine import load_average, machine_info
from bench.common.models import BenchModel, train_and_register, tree_shape
from bench.common.report import machine_section
from bench.serving.load import SCENARIOS, WrkResult, lua_script, run_wrk, wrk_version
from bench.serving.payloads import request_body
from bench.serving.profile import profile
from bench.serving.report import serving_report
from bench.serving.servers import STARTERS, Server, check_answers, served_by_deployment

PACKAGES = ("lightgbm", "mlflow", "uvicorn", "uvloop", "httptools", "orjson", "numpy")


def measure(
    args: argparse.Namespace,
    info: dict[str, str],
    stack: contextlib.ExitStack,
    workdir: Path,
    model: BenchModel,
) -> str:
    """Start the servers, load each with wrk, and return the Markdown report."""
    servers: dict[str, Server] = {}
    for key, start in STARTERS.items():
        if key in args.servers.split(","):
            log(f"starting {key}")
            servers[key] = start(stack, model, workdir)
            check_answers(servers[key], model, (s.rows for s in SCENARIOS))
    scripts = {
        (s.key, sc.key): lua_script(
            workdir, f"{s.key}-{sc.key}", request_body(model, sc.rows, s.body_format), s.headers
        )
        for s in servers.values()
        for sc in SCENARIOS
    }
    results: list[WrkResult] = []
    order = list(servers.values())
    for round_ in range(1, args.rounds + 1):
        shift = (round_ - 1) % len(order)
        for scenario in SCENARIOS:
            for server in order[shift:] + order[:shift]:
                script = scripts[(server.key, scenario.key)]
                if args.warmup > 0:
                    run_wrk(server, scenario, script, args.warmup, round_)
                result = run_wrk(server, scenario, script, args.duration, round_)
                results.append(result)
                log(
                    f"round {round_} {scenario.key:13} {server.key:10} "
                    f"{result.requests_per_s:9,.0f} req/s  p99 {result.p99_ms:7.2f} ms  "
                    f"others {result.others_cpu_percent:3.0f}%"
                )
    command = " ".join(["python", "-m", "bench.serving", *sys.argv[1:]])
    notes = [
        f"command: {command}",
        f"wrk -d{args.duration}s --latency --timeout 10s after a {args.warmup} s warm-up; "
        f"{args.rounds} round(s), server order rotated each round",
        f"load average at end: {load_average()}",
    ]
    if "modelferry" in servers:
        served = served_by_deployment(servers["modelferry"])
        total = sum(served.values()) or 1
        split = ", ".join(f"{n} {c:,} ({c / total:.1%})" for n, c in sorted(served.items()))
        notes.append(f"(c) requests answered per deployment (its /metrics): {split}")
    if args.json is not None:
        args.json.write_text(
            json.dumps({"machine": info, "runs": [asdict(r) for r in results]}, indent=2)
        )
    return serving_report(info, results, {k: s.label for k, s in servers.items()}, notes)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (or the in-process profile) and print the Markdown report."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.serving",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every run (3)")
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run (10)")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of warm-up per run (3)")
    parser.add_argument(
        "--servers",
        default="mlflow,floor,modelferry",
        help="which servers to run, comma-separated (mlflow,floor,modelferry)",
    )
    parser.add_argument("--json", type=Path, help="also write every run as JSON here")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs, store)")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="instead of the servers: ScoringApp vs the floor in-process, stages and cProfile",
    )
    args = parser.parse_args(argv)
    interrupt_on_termination()

    info = machine_info(PACKAGES, {"wrk": wrk_version()})
    with contextlib.ExitStack() as stack:
        workdir = work_dir(stack, "mf-bench-", args.keep)
        log(f"work dir {workdir}")
        log("training and registering the model")
        model = train_and_register(workdir)
        info["model"] = tree_shape(model.booster_file)
        if args.profile:
            print("\n".join(machine_section(info)) + "\n\n" + profile(model))
        else:
            print(measure(args, info, stack, workdir, model))
        log("stopping")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; servers stopped", file=sys.stderr)
        sys.exit(130)
