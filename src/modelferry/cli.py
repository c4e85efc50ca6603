"""The `modelferry` command: validate configs, list runs awaiting approval, approve them.

Exit codes: 0 success; 1 the Prefect API (or another modelferry step) failed; 2 a usage
error or an invalid config. Errors print one message on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final, cast

from modelferry import __version__
from modelferry.cli_help import CommandParser
from modelferry.cli_output import add_output_option, iso_utc, print_json
from modelferry.console_commands import console_command
from modelferry.errors import InvalidConfigError, ModelferryError
from modelferry.telemetry_opt_out import opt_out_of_telemetry

if TYPE_CHECKING:
    from modelferry.config import ModelConfig
    from modelferry_prefect.approvals import PausedRun

__all__ = ["main"]

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
#: 128 + SIGPIPE, what a shell reports for a command whose reader closed the pipe.
EXIT_BROKEN_PIPE: Final = 141

# The extras to name first when a command's module is missing: the agent runs on devices,
# a reviewer needs only Prefect's client; everything else runs on the orchestrator side.
_PREFERRED_EXTRAS: Final = {
    "agent": ["edge", "orchestrator"],
    "pending": ["approval", "orchestrator"],
    "approve": ["approval", "orchestrator"],
}
# Import names of the distributions whose name does not say it.
_IMPORT_NAMES: Final = {"scikit_learn": "sklearn", "pyyaml": "yaml", "paho_mqtt": "paho"}
_NO_PENDING: Final = "No flow runs are waiting for approval."
_APPROVE_OPTIONS: Final = "--reviewer NAME [--reject] [--comment TEXT]"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return its exit code (for `sys.exit(main())`).

    Args:
        argv: The arguments without the program name; defaults to `sys.argv[1:]`.
    """
    opt_out_of_telemetry()
    if isinstance(sys.stdout, io.TextIOWrapper):
        # A name stdout's encoding cannot hold (`PYTHONIOENCODING=ascii`) prints escaped,
        # instead of failing the command after it did its work.
        sys.stdout.reconfigure(errors="backslashreplace")
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        # argparse exits on --help, --version and usage errors; callers want a code back.
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        code: int = args.handler(args)
    except InvalidConfigError as exc:
        _error(str(exc))
        return EXIT_USAGE
    except ModelferryError as exc:
        _error(str(exc))
        return EXIT_FAILED
    except ModuleNotFoundError as exc:
        # A command that needs an extra the install lacks: say which, never a traceback.
        message = _missing_extra(args, exc)
        if message is None:
            raise  # No module modelferry installs: a bug, shown with where it happened.
        _error(message)
        return EXIT_FAILED
    except KeyboardInterrupt:
        _error("interrupted")
        return 130
    except BrokenPipeError:
        # The reader went away (`modelferry endpoints logs NAME | head`): stop quietly, and
        # keep the interpreter's final flush of stdout from failing with a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    return code


def _missing_extra(args: argparse.Namespace, exc: ModuleNotFoundError) -> str | None:
    """One line naming the extra that installs the module `exc` reports missing.

    A module of modelferry itself or of a core requirement asks for a reinstall; None for
    a module modelferry does not install at all (not the install's fault).
    """
    command = " ".join(["modelferry", args.command, *filter(None, [getattr(args, "action", None)])])
    module = (exc.name or "").partition(".")[0]
    extras = _extras_providing(module)
    preferred = _PREFERRED_EXTRAS.get(args.command, ["orchestrator", "edge"])
    extra = next((name for name in [*preferred, *extras] if name in extras), None)
    if extra is not None:
        return (
            f"{command} needs the {extra!r} extra: pip install 'modelferry[{extra}]' "
            f"(no module named {module!r})"
        )
    if module in {"modelferry", "modelferry_prefect"} or (module, None) in _requirements():
        return f"{command} cannot import {exc.name!r}: reinstall modelferry ({exc})"
    return None


def _extras_providing(module: str) -> list[str]:
    """The extras of the installed modelferry whose requirements install `module`."""
    return list(dict.fromkeys(extra for name, extra in _requirements() if extra and name == module))


def _requirements() -> list[tuple[str, str | None]]:
    """(top-level module, extra or None for the core) of each requirement of modelferry.

    Read from the installed package's own metadata, so the answer follows pyproject.toml.
    """
    from importlib.metadata import PackageNotFoundError, requires

    try:
        requirements = requires("modelferry") or []
    except PackageNotFoundError:
        return []
    found: list[tuple[str, str | None]] = []
    for requirement in requirements:
        spec, _, marker = requirement.partition(";")
        extra = re.search(r"extra\s*==\s*[\"']([\w-]+)[\"']", marker)
        distribution = re.match(r"[A-Za-z0-9._-]+", spec.strip())
        if distribution is not None:
            found.append((_import_name(distribution[0]), extra[1] if extra else None))
    return found


def _import_name(distribution: str) -> str:
    """The top-level module a distribution installs (`azure-ai-ml` installs `azure`)."""
    name = re.sub(r"[-.]", "_", distribution.lower())
    if name.startswith("azure_"):
        return "azure"
    return _IMPORT_NAMES.get(name, name)


def _build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="modelferry",
        description="Train, gate, approve and deliver models as Prefect flows.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    # Every subcommand's parser is a CommandParser: argparse passes the class on.
    commands = cast(
        "argparse._SubParsersAction[argparse.ArgumentParser]",
        parser.add_subparsers(dest="command", metavar="COMMAND"),
    )

    validate = commands.add_parser(
        "validate",
        help="check a model config file",
        description="Validate a model config file (JSON or YAML) and summarise it.",
    )
    validate.add_argument("config", metavar="CONFIG", help="path of the model config file")
    validate.set_defaults(handler=_cmd_validate)

    # Shared by the commands that talk to the Prefect API.
    api = CommandParser(add_help=False)
    api.add_argument(
        "--api-url",
        metavar="URL",
        help="Prefect API URL (default: PREFECT_API_URL from the environment or the active "
        "Prefect profile), e.g. http://127.0.0.1:4200/api",
    )

    pending = commands.add_parser(
        "pending",
        parents=[api],
        help="list flow runs waiting for approval",
        description="List the paused flow runs that wait for a reviewer's approval.",
    )
    add_output_option(
        pending,
        "a list of the runs waiting for approval (empty when none), each with id (for "
        "`modelferry approve`), flow_name, run_name, paused_since and times_out_at (when the "
        "reviewer's time runs out; null: never), timestamps in ISO 8601 UTC.",
    )
    pending.set_defaults(handler=_cmd_pending)

    approve = commands.add_parser(
        "approve",
        parents=[api],
        help="approve (or --reject) a paused flow run",
        description="Answer a paused run's approval form and resume it.",
    )
    approve.add_argument("flow_run_id", metavar="FLOW_RUN_ID", help="id from `modelferry pending`")
    approve.add_argument(
        "--reviewer", required=True, metavar="NAME", help="who decides (kept for the audit trail)"
    )
    approve.add_argument(
        "--reject", action="store_true", help="reject the challenger instead of approving it"
    )
    approve.add_argument(
        "--comment", default="", metavar="TEXT", help="why (kept with the decision)"
    )
    approve.set_defaults(handler=_cmd_approve)

    from modelferry.cli_endpoints import add_endpoint_commands

    add_endpoint_commands(commands)

    from modelferry.cli_agent import add_agent_command

    add_agent_command(commands)
    from modelferry.cli_db import add_db_command

    add_db_command(commands)
    return parser


def _cmd_validate(args: argparse.Namespace) -> int:
    # Imported here so `pending` and `approve` work without loading the training stack.
    from modelferry.config import load_config

    config = load_config(args.config)
    print(f"{args.config}: OK: {_summarise(config)}")
    return EXIT_OK


def _cmd_pending(args: argparse.Namespace) -> int:
    # Prefect's client, imported here only: every other command runs without Prefect.
    from modelferry_prefect.approvals import connect

    with connect(api_url=args.api_url) as approvals:
        paused = approvals.list_paused_runs()
    waiting = [run for run in paused if run.waits_for_input]
    if args.output == "json":
        print_json([_pending_json(run) for run in waiting])
        return EXIT_OK
    if not waiting:
        print(_NO_PENDING)
    else:
        print(_format_table(waiting, now=datetime.now(UTC)))
        print()
        cli = console_command("modelferry", "modelferry.cli")
        print(f"Decide with: {cli} approve FLOW_RUN_ID {_APPROVE_OPTIONS}")
    others = len(paused) - len(waiting)
    if others:
        # Shown so a paused run without a form is not mistaken for a lost approval.
        print(f"({others} other paused run(s) wait for no input; resume them from the Prefect UI.)")
    return EXIT_OK


def _cmd_approve(args: argparse.Namespace) -> int:
    reviewer = args.reviewer.strip()
    if not reviewer:
        _error("--reviewer must name who decides; got an empty name")
        return EXIT_USAGE
    from modelferry_prefect.approvals import connect

    approve = not args.reject
    # The fields of the paused run's approval form (`ApprovalInput`): an explicit choice.
    decision = "approve" if approve else "reject"
    run_input = {"decision": decision, "reviewer": reviewer, "comment": args.comment}
    with connect(api_url=args.api_url) as approvals:
        approvals.resume(args.flow_run_id, run_input)
    verb = "Approved" if approve else "Rejected"
    note = f" ({args.comment})" if args.comment else ""
    print(f"{verb} flow run {args.flow_run_id.strip()} as {reviewer}{note}; the flow resumes now.")
    return EXIT_OK


def _summarise(config: ModelConfig) -> str:
    from modelferry.data.masking import mask_text

    source = config.data.source
    if source.kind == "bundled":
        data = f"bundled {source.name}"
    elif source.kind == "file":
        data = f"file {mask_text(str(source.path))}"
    else:
        data = "sql query"  # The URL may hold a password.
    gates = ", ".join(config.gate.metrics)
    return (
        f"model {config.registered_model_name!r} ({config.model.type}) in experiment "
        f"{config.experiment_name!r}; data: {data}; gate: {gates}; "
        f"approval: {config.approval.mode}"
    )


def _format_table(runs: Sequence[PausedRun], now: datetime) -> str:
    header = ("FLOW RUN ID", "FLOW", "RUN NAME", "PAUSED SINCE", "TIMES OUT")
    rows = [
        (
            run.id,
            run.flow_name,
            run.run_name,
            _format_time(run.paused_since),
            _format_deadline(run.pause_timeout, now),
        )
        for run in runs
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
    return "\n".join(lines)


def _pending_json(run: PausedRun) -> dict[str, str | None]:
    return {
        "id": run.id,
        "flow_name": run.flow_name,
        "run_name": run.run_name,
        "paused_since": iso_utc(run.paused_since),
        "times_out_at": iso_utc(run.pause_timeout),
    }


def _format_time(value: datetime | None) -> str:
    if value is None:
        return "-"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _format_deadline(value: datetime | None, now: datetime) -> str:
    if value is None:
        return "never"
    seconds = int((value - now).total_seconds())
    if seconds <= 0:
        return f"{_format_time(value)} (overdue)"
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        left = f"{days}d{hours:02d}h"
    elif hours:
        left = f"{hours}h{minutes:02d}m"
    else:
        left = f"{minutes}m{seconds:02d}s"
    return f"{_format_time(value)} (in {left})"


def _error(message: str) -> None:
    print(f"modelferry: error: {message}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
