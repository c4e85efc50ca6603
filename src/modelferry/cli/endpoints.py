"""`modelferry endpoints …`: look after online endpoints, local or on Azure ML, from a shell.

modelferry endpoints list [--output json]
modelferry endpoints show NAME [--output json]
modelferry endpoints traffic NAME blue=90 green=10 [--mirror shadow=10]
modelferry endpoints rollback NAME [--steps N]    (local only)
modelferry endpoints key NAME [--rotate]
modelferry endpoints delete NAME
modelferry endpoints logs NAME [--deployment D] [--lines N]

`rollback` undoes the last release: it restores the traffic split in force before the first
change that gave a newly deployed model version traffic, however many canary steps followed.
`--steps N` undoes the last N traffic changes instead. `key` prints the scoring key alone on
stdout (`KEY=$(modelferry endpoints key NAME)`); `--rotate` replaces it first (local only).

`--backend azureml` works on the managed online endpoints of an Azure ML workspace named by
--subscription-id, --resource-group and --workspace, or by the environment variables
AZUREML_SUBSCRIPTION_ID, AZUREML_RESOURCE_GROUP and AZUREML_WORKSPACE. It signs in with
DefaultAzureCredential: an Azure CLI login, a managed or workload identity, or a service
principal in AZURE_CLIENT_ID, AZURE_TENANT_ID and AZURE_CLIENT_SECRET.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from modelferry.cli.output import add_output_option, print_json
from modelferry.endpoints.backend import EndpointBackend, TrafficRollback
from modelferry.endpoints.spec import EndpointState, TrafficSplit
from modelferry.errors import (
    EndpointNotFoundError,
    InvalidConfigError,
    InvalidEndpointSpecError,
    ModelferryError,
)

# No module-level import of the registry (MLflow, pandas): `modelferry agent` shares this
# command line on edge devices, where only the `edge` extra is installed.

#: Where the local backend keeps its state unless `--home` says otherwise.
DEFAULT_ENDPOINTS_HOME = Path(".modelferry") / "endpoints"

BACKENDS = ("local", "azureml")
_ENDPOINT_FIELDS = (
    "with name, scoring_uri, traffic and mirror (deployment name to percent) and "
    "deployments (name, model_name, model_version, status, detail)."
)
_WORKSPACE_OPTIONS = {
    "subscription_id": "--subscription-id",
    "resource_group": "--resource-group",
    "workspace": "--workspace",
}


def add_endpoint_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `endpoints` and its subcommands on the top-level parser."""
    shared = argparse.ArgumentParser(add_help=False)
    shared.add_argument(
        "--backend",
        choices=BACKENDS,
        default="local",
        help="where the endpoints run: local processes or Azure ML (default: local)",
    )
    shared.add_argument(
        "--home",
        type=Path,
        default=DEFAULT_ENDPOINTS_HOME,
        help=f"local endpoint state folder (default: {DEFAULT_ENDPOINTS_HOME})",
    )
    shared.add_argument(
        "--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or embedded)"
    )
    azure = shared.add_argument_group("Azure ML workspace (with --backend azureml)")
    azure.add_argument("--subscription-id", help="default: $AZUREML_SUBSCRIPTION_ID")
    azure.add_argument("--resource-group", help="default: $AZUREML_RESOURCE_GROUP")
    azure.add_argument("--workspace", help="default: $AZUREML_WORKSPACE")
    endpoints = commands.add_parser(
        "endpoints",
        help="manage online endpoints (local or Azure ML)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = endpoints.add_subparsers(dest="action", metavar="ACTION", required=True)

    listing = actions.add_parser(
        "list", parents=[shared], help="endpoints, deployments and traffic"
    )
    add_output_option(listing, f"a list of endpoints (empty when none), each {_ENDPOINT_FIELDS}")
    show = actions.add_parser("show", parents=[shared], help="one endpoint in detail")
    show.add_argument("name")
    add_output_option(
        show,
        f"one endpoint, {_ENDPOINT_FIELDS} The scoring key is left out: "
        "`modelferry endpoints key NAME` prints it.",
    )
    traffic = actions.add_parser("traffic", parents=[shared], help="set traffic weights")
    traffic.add_argument("name")
    traffic.add_argument("weights", nargs="+", metavar="DEPLOYMENT=PERCENT")
    traffic.add_argument("--mirror", nargs="*", default=[], metavar="DEPLOYMENT=PERCENT")
    rollback = actions.add_parser(
        "rollback",
        parents=[shared],
        help="restore the traffic split before the last release (local only)",
    )
    rollback.add_argument("name")
    rollback.add_argument(
        "--steps",
        type=int,
        metavar="N",
        help="undo the last N traffic changes instead of the whole release",
    )
    key = actions.add_parser(
        "key", parents=[shared], help="print the scoring key (alone, on stdout)"
    )
    key.add_argument("name")
    key.add_argument(
        "--rotate",
        action="store_true",
        help="make a new key first; the old one is refused from then on (local only)",
    )
    delete = actions.add_parser("delete", parents=[shared], help="remove an endpoint")
    delete.add_argument("name")
    logs = actions.add_parser("logs", parents=[shared], help="the end of a deployment's log")
    logs.add_argument("name")
    logs.add_argument(
        "--deployment", default="", help="the deployment (required with --backend azureml)"
    )
    logs.add_argument("--lines", type=int, default=100)
    endpoints.set_defaults(handler=run_endpoint_command)


def run_endpoint_command(args: argparse.Namespace) -> int:
    """Carry out one `endpoints` action; returns the exit code.

    Raises:
        InvalidConfigError: options that do not fit the backend.
        OperationNotSupportedError: an optional action the backend does not offer
            (`rollback` and `key --rotate` on Azure ML).
    """
    check_supported(args)
    backend = create_backend(args)
    if args.action == "list":
        states = backend.list_endpoints()
        if args.output == "json":
            print_json([endpoint_json(state) for state in states])
            return 0
        if not states:
            print(f"No {backend.display_name} endpoints.")
        for state in states:
            print(format_endpoint(state, brief=True))
    elif args.action == "show":
        state = backend.get_endpoint(args.name)
        if args.output == "json":
            print_json(endpoint_json(state))
            return 0
        print(format_endpoint(state))
        print(f"Scoring key: {_command(args, 'key')}")
    elif args.action == "traffic":
        split = TrafficSplit(parse_weights(args.weights), parse_weights(args.mirror))
        print(format_endpoint(backend.set_traffic(args.name, split)))
    elif args.action == "rollback":
        print(format_rollback(backend.rollback_traffic(args.name, args.steps)))
    elif args.action == "key":
        key = backend.rotate_key(args.name) if args.rotate else backend.get_keys(args.name)
        # Only the key on stdout, so that `KEY=$(modelferry endpoints key NAME)` works.
        print(key.get_secret_value())
    elif args.action == "delete":
        try:
            backend.get_endpoint(args.name)
        except EndpointNotFoundError as exc:
            raise EndpointNotFoundError(
                f"cannot delete endpoint {args.name!r}: it does not exist ({exc}); "
                f"`{_command(args, 'list', with_name=False)}` lists the endpoints",
                endpoint=args.name,
            ) from exc
        backend.delete_endpoint(args.name)
        print(f"Deleted endpoint {args.name!r}.")
    elif args.action == "logs":
        logs = backend.get_logs(args.name, args.deployment, args.lines)
        if logs:
            print(logs)
    return 0


def check_supported(args: argparse.Namespace) -> None:
    """Refuse, before signing in anywhere, what the chosen backend cannot do.

    Raises:
        InvalidConfigError: workspace options without `--backend azureml`; on Azure ML,
            `logs` without `--deployment`.
    """
    if args.backend == "local":
        given = [flag for key, flag in _WORKSPACE_OPTIONS.items() if getattr(args, key)]
        if given:
            raise InvalidConfigError(
                f"{', '.join(given)} name an Azure ML workspace: add --backend azureml, or "
                "leave them out for local endpoints"
            )
        return
    if args.action == "logs" and not args.deployment:
        raise InvalidConfigError(
            "on Azure ML each deployment has its own log: add --deployment NAME "
            "(`modelferry endpoints show ENDPOINT --backend azureml` lists them)"
        )


def create_backend(args: argparse.Namespace) -> EndpointBackend:
    """The backend `--backend` names, configured from the options and the environment.

    Raises:
        InvalidConfigError: the Azure ML workspace is not fully named.
        ModelferryError: the Azure SDKs are not installed (the message names the extra).
    """
    from modelferry.registry import TrackingSettings

    settings = TrackingSettings.resolve(args.tracking_uri)
    if args.backend == "local":
        from modelferry.endpoints.local import LocalEndpointBackend

        return LocalEndpointBackend(args.home, settings)
    from modelferry.endpoints.azureml import AzureMLEndpointBackend, WorkspaceRef
    from modelferry.registry import ModelRegistry

    workspace = WorkspaceRef.resolve(args.subscription_id, args.resource_group, args.workspace)
    try:
        client = workspace.ml_client()
    except ImportError as exc:
        raise ModelferryError(str(exc)) from exc
    return AzureMLEndpointBackend(client, ModelRegistry(settings))


def _command(args: argparse.Namespace, action: str, with_name: bool = True) -> str:
    """The `modelferry endpoints` command line for `action` on the same endpoints."""
    words = ["modelferry", "endpoints", action]
    if with_name:
        words.append(args.name)
    if args.backend != "local":
        words += ["--backend", args.backend]
    elif args.home != DEFAULT_ENDPOINTS_HOME:
        words += ["--home", str(args.home)]
    return " ".join(words)


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


def format_rollback(rollback: TrafficRollback) -> str:
    """What a rollback did: which release or how many changes, the split before and after.

    E.g. "Rolled back the release of green (v2): blue 100%, green 0% (was blue 0%,
    green 100%)".
    """
    after, before = rollback.state.traffic, rollback.replaced
    names = sorted(set(after.weights) | set(before.weights))
    what = (
        f"the release of {rollback.release}"
        if rollback.release
        else f"{rollback.changes} traffic change{'s' if rollback.changes != 1 else ''}"
    )
    text = f"Rolled back {what}: {_weights(after, names)} (was {_weights(before, names)})"
    if after.mirror != before.mirror:
        text += f"; mirror: {_mirror(after)} (was {_mirror(before)})"
    return text


def _weights(split: TrafficSplit, names: list[str]) -> str:
    return ", ".join(f"{n} {split.weights.get(n, 0)}%" for n in names) or "no traffic"


def _mirror(split: TrafficSplit) -> str:
    return ", ".join(f"{n} {w}%" for n, w in sorted(split.mirror.items())) or "none"


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


def endpoint_json(state: EndpointState) -> dict[str, Any]:
    """An endpoint as `--output json` shows it: no scoring key, no admin token."""
    return {
        "name": state.name,
        "scoring_uri": state.scoring_uri,
        "traffic": dict(sorted(state.traffic.weights.items())),
        "mirror": dict(sorted(state.traffic.mirror.items())),
        "deployments": [
            {
                "name": d.name,
                "model_name": d.model_name,
                "model_version": d.model_version,
                "status": d.status,
                "detail": d.detail,
            }
            for d in state.deployments
        ],
    }
