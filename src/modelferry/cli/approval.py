"""`modelferry pending` and `modelferry approve`: a reviewer's side of the approval gate.

Both talk to the Prefect API through `modelferry_prefect.approvals`, imported only when one
of them runs: every other command works without Prefect installed.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final

from modelferry.cli.exit_codes import EXIT_OK, EXIT_USAGE
from modelferry.cli.help import CommandParser
from modelferry.cli.output import add_output_option, iso_utc, print_error, print_json
from modelferry.console_commands import console_command

if TYPE_CHECKING:
    from modelferry_prefect.approvals import PausedRun

__all__ = ["add_approval_commands"]

_NO_PENDING: Final = "No flow runs are waiting for approval."
_APPROVE_OPTIONS: Final = "--reviewer NAME [--reject] [--comment TEXT]"


def add_approval_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `pending` and `approve` on the top-level parser."""
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
        print_error("--reviewer must name who decides; got an empty name")
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
