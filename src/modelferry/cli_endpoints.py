"""`modelferry endpoints …`: look after the local online endpoints from a shell.

modelferry endpoints list
modelferry endpoints show NAME
modelferry endpoints traffic NAME blue=90 green=10 [--mirror shadow=10]
modelferry endpoints rollback NAME
modelferry endpoints delete NAME
modelferry endpoints logs NAME [--lines N]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from modelferry.endpoints.spec import EndpointState, TrafficSplit
from modelferry.errors import InvalidEndpointSpecError
from modelferry.registry import DEFAULT_HOME, TrackingSettings

#: Where the local backend keeps its state unless `--home` says otherwise.
DEFAULT_ENDPOINTS_HOME = DEFAULT_HOME / "endpoints"


def add_endpoint_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `endpoints` and its subcommands on the top-level parser."""
    shared = argparse.ArgumentParser(add_help=False)
    shared.add_argument(
        "--home",
        type=Path,
        default=DEFAULT_ENDPOINTS_HOME,
        help=f"local endpoint state folder (default: {DEFAULT_ENDPOINTS_HOME})",
    )
    shared.add_argument(
        "--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or embedded)"
    )
    endpoints = commands.add_parser(
        "endpoints", help="manage local online endpoints", description=__doc__
    )
    actions = endpoints.add_subparsers(dest="action", metavar="ACTION", required=True)

    actions.add_parser("list", parents=[shared], help="endpoints, deployments and traffic")
    show = actions.add_parser("show", parents=[shared], help="one endpoint in detail")
    show.add_argument("name")
    traffic = actions.add_parser("traffic", parents=[shared], help="set traffic weights")
    traffic.add_argument("name")
    traffic.add_argument("weights", nargs="+", metavar="DEPLOYMENT=PERCENT")
    traffic.add_argument("--mirror", nargs="*", default=[], metavar="DEPLOYMENT=PERCENT")
    rollback = actions.add_parser(
        "rollback", parents=[shared], help="restore the previous traffic split"
    )
    rollback.add_argument("name")
    delete = actions.add_parser("delete", parents=[shared], help="stop and remove an endpoint")
    delete.add_argument("name")
    logs = actions.add_parser("logs", parents=[shared], help="the end of the server log")
    logs.add_argument("name")
    logs.add_argument("--deployment", default="")
    logs.add_argument("--lines", type=int, default=100)
    endpoints.set_defaults(handler=run_endpoint_command)


def run_endpoint_command(args: argparse.Namespace) -> int:
    """Carry out one `endpoints` action; returns the exit code."""
    from modelferry.endpoints.local import LocalEndpointBackend

    backend = LocalEndpointBackend(args.home, TrackingSettings.resolve(args.tracking_uri))
    if args.action == "list":
        states = backend.list_endpoints()
        if not states:
            print("No local endpoints.")
        for state in states:
            print(format_endpoint(state, brief=True))
    elif args.action == "show":
        print(format_endpoint(backend.get_endpoint(args.name)))
    elif args.action == "traffic":
        split = TrafficSplit(parse_weights(args.weights), parse_weights(args.mirror))
        print(format_endpoint(backend.set_traffic(args.name, split)))
    elif args.action == "rollback":
        print(format_endpoint(backend.rollback_traffic(args.name)))
    elif args.action == "delete":
        backend.delete_endpoint(args.name)
        print(f"Deleted endpoint {args.name!r} (if it existed).")
    elif args.action == "logs":
        print(backend.get_logs(args.name, args.deployment, args.lines))
    return 0


def parse_weights(items: list[str]) -> dict[str, int]:
    """`["blue=90", "green=10"]` → `{"blue": 90, "green": 10}`.

    Raises:
        InvalidEndpointSpecError: an item is not NAME=INTEGER.
    """
    weights: dict[str, int] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name or not value.strip().isdigit():
            raise InvalidEndpointSpecError(
                f"traffic {item!r}: write DEPLOYMENT=PERCENT, e.g. blue=90 green=10"
            )
        weights[name] = int(value)
    return weights


def format_endpoint(state: EndpointState, brief: bool = False) -> str:
    """An endpoint as text: scoring URI, traffic, and its deployments."""
    weights = ", ".join(f"{n}={w}%" for n, w in sorted(state.traffic.weights.items())) or "none"
    mirror = ", ".join(f"{n}={w}%" for n, w in sorted(state.traffic.mirror.items()))
    lines = [f"{state.name}  {state.scoring_uri}  traffic: {weights}"]
    if mirror:
        lines[0] += f"  mirror: {mirror}"
    if brief:
        return lines[0]
    for d in state.deployments:
        detail = f"  ({d.detail})" if d.detail else ""
        lines.append(f"  {d.name:<12} {d.model_name} v{d.model_version:<6} {d.status}{detail}")
    return "\n".join(lines)
