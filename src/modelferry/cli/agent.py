"""`modelferry agent …`: the reference edge agent from a shell.

modelferry agent --device-id ID --transport mqtt --root DIR --public-key KEY [--broker-host ...]
modelferry agent --transport iothub --connection-string-env VAR --root DIR --public-key KEY
modelferry agent --device-id ID --root DIR --trust-file FILE [--require-format-2] ...
modelferry agent rollback --root DIR [--device-id ID] [--to VERSION] [--below-floor]
modelferry agent status --root DIR [--device-id ID] [--output json]

With one `--device-id` the agent keeps its files in DIR itself; with several (many agents
in one process, sharing one event loop) each device gets DIR/{device_id}. `--public-key`
takes a key file (PEM or base64) or the base64 text itself, and may be repeated; each is
trusted to sign packages. `--trust-file` gives keys with roles, revoked key ids, a
signature threshold and the oldest package format accepted (docs/package-format.md);
both may be given. The agent
runs until SIGTERM or SIGINT; a delivery under way then is abandoned cleanly and resumed
on the next start. `rollback` and `status` act on DIR, or with `--device-id` on DIR/{ID},
which must exist. A rollback keeps the version it leaves installed: `rollback --to VERSION`
makes it (or any other kept version) current again. A rollback to a version below its
model's anti-rollback floor (set by an installed package's min_version) is refused unless
`--below-floor` is given; the floor stays, so deliveries below it are still refused.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from modelferry.cli.help import UsageLinesHelpFormatter
from modelferry.cli.output import add_output_option, iso_utc_text, print_json
from modelferry.errors import InvalidConfigError, PackageVerificationError, TrustFileError
from modelferry.settings import load_settings
from modelferry.structured_logging import LOG_FORMATS, configure_logging

if TYPE_CHECKING:
    from modelferry.delivery.channels.base import DeviceTransport
    from modelferry.edge import EdgeAgent
    from modelferry.edge.state import DeviceDeliveryState, InstalledVersion

__all__ = ["add_agent_command", "run_agent_command"]

#: How many of the latest deliveries `status` shows.
_RECENT_DELIVERIES: Final = 10


def add_agent_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `agent` (run by default), `agent run`, `agent rollback`, `agent status`."""
    agent = commands.add_parser(
        "agent",
        help="run the reference edge agent (or roll back / show its installed versions)",
        description=__doc__,
        formatter_class=UsageLinesHelpFormatter,
    )
    _add_run_options(agent)
    # The actions' descriptions are prose, wrapped by the parser's own formatter: only
    # `agent`'s description holds usage lines to print as written.
    actions = agent.add_subparsers(dest="action", metavar="ACTION", title="actions (default: run)")
    run = actions.add_parser(
        "run",
        help="run the agent until SIGTERM or SIGINT (the default)",
        description="Run the reference edge agent until SIGTERM or SIGINT.",
    )
    _add_run_options(run)
    rollback = actions.add_parser(
        "rollback",
        help="make the version installed before the current one current again",
        description=(
            "Make the version installed before the current one current again (or, with "
            "--to, any kept version). The version rolled back from stays installed, so "
            "`rollback --to VERSION` rolls forward to it later."
        ),
    )
    _add_folder_options(rollback)
    rollback.add_argument(
        "--to",
        metavar="VERSION",
        help="the kept version to make current, older or newer (VERSION or PACKAGE_ID/VERSION)",
    )
    rollback.add_argument(
        "--below-floor",
        action="store_true",
        help="allow a version below its model's anti-rollback floor (the floor stays)",
    )
    status = actions.add_parser(
        "status",
        help="show the current version, the kept ones and recent deliveries",
        description="Show an agent's current version, its kept versions and recent deliveries.",
    )
    _add_folder_options(status)
    add_output_option(
        status,
        "an object with root; current (the current version, or null when nothing is "
        "installed); installed (the kept versions, newest first, each with package_id, "
        "version, model_name, model_version, delivery_id, installed_at and current, true for "
        "the current one); recent_deliveries (the last "
        f"{_RECENT_DELIVERIES}, newest first, each with delivery_id, project_id, package_id, "
        "package_version, state, reason (why it failed, or null) and updated_at); "
        "version_floors (model name -> the lowest version accepted, anti-rollback). "
        "Timestamps are ISO 8601 UTC.",
    )
    agent.set_defaults(handler=run_agent_command)


def _add_folder_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", type=Path, required=True, help="the agent's folder")
    parser.add_argument(
        "--device-id",
        action="append",
        default=[],
        metavar="ID",
        help="act on ROOT/ID, the folder of one device of a multi-agent root",
    )


def _add_run_options(agent: argparse.ArgumentParser) -> None:
    # Not required by argparse: `agent status --root` gives it to the subcommand instead.
    agent.add_argument("--root", type=Path, default=None, help="the agent's folder (required)")
    agent.add_argument(
        "--device-id",
        action="append",
        default=[],
        metavar="ID",
        help="device to act for; repeat to run several agents in one process",
    )
    agent.add_argument(
        "--device-ids-file",
        type=Path,
        default=None,
        metavar="FILE",
        help="more device ids, one per line (for many agents in one process)",
    )
    agent.add_argument(
        "--transport", choices=("mqtt", "iothub", "local"), default="mqtt", help="how to connect"
    )
    agent.add_argument(
        "--public-key",
        action="append",
        default=[],
        metavar="FILE_OR_B64",
        help="a trusted package signing key (file, or base64 of the raw key); repeatable",
    )
    agent.add_argument(
        "--trust-file",
        type=Path,
        default=None,
        metavar="FILE",
        help="JSON trust file: keys with roles, revoked key ids, threshold, minimum format",
    )
    agent.add_argument(
        "--require-format-2",
        action="store_true",
        help="refuse format 1 packages (no signed expiry or version floor)",
    )
    mqtt = agent.add_argument_group("MQTT broker (--transport mqtt)")
    mqtt.add_argument("--broker-host", default="127.0.0.1", metavar="HOST", help="broker host")
    mqtt.add_argument("--broker-port", type=int, default=1883, metavar="PORT", help="broker port")
    mqtt.add_argument("--username", default=None, help="broker user name")
    mqtt.add_argument(
        "--password-env", default=None, metavar="VAR", help="environment variable with the password"
    )
    mqtt.add_argument("--tls", action="store_true", help="connect with TLS")
    mqtt.add_argument("--ca-file", default=None, metavar="FILE", help="CA bundle for TLS")
    mqtt.add_argument(
        "--mqtt-protocol", choices=("5", "3.1.1"), default="5", help="MQTT protocol version"
    )
    iothub = agent.add_argument_group("Azure IoT Hub (--transport iothub)")
    iothub.add_argument(
        "--connection-string-env",
        default=None,
        metavar="VAR",
        help="environment variable with the device connection string",
    )
    tuning = agent.add_argument_group("behaviour")
    tuning.add_argument(
        "--keep-versions", type=int, default=3, metavar="N", help="installed versions kept"
    )
    tuning.add_argument(
        "--link-timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="how long to wait for each download link",
    )
    tuning.add_argument(
        "--smoke-timeout",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="how long the smoke prediction may take",
    )
    tuning.add_argument(
        "--smoke-python",
        default=sys.executable,
        metavar="PATH",
        help="interpreter that runs the package's score.py (default: this Python)",
    )
    tuning.add_argument(
        "--no-smoke", action="store_true", help="skip the smoke prediction (protocol tests only)"
    )
    tuning.add_argument(
        "--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING"), help="log detail"
    )
    tuning.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default=None,
        help="text for people, json (one object per line, with device_id and delivery_id) "
        "for log pipelines; default $MODELFERRY_LOG_FORMAT, else text",
    )


def run_agent_command(args: argparse.Namespace) -> int:
    """Carry out one `agent` action; returns the exit code."""
    if args.action in (None, "run"):
        return _run(args)
    if len(args.device_id) > 1:
        print(_usage(f"{args.action} takes one --device-id at most"), file=sys.stderr)
        return 2
    # With --device-id, the device's folder in the layout of several agents per process.
    root: Path = args.root / args.device_id[0] if args.device_id else args.root
    if not root.is_dir():
        # Only a running agent creates its root; a typo here must not read as "empty".
        print(
            _usage(
                f"no agent folder at {root}: check --root"
                + (" and --device-id" if args.device_id else "")
            ),
            file=sys.stderr,
        )
        return 1
    if args.action == "rollback":
        return _rollback(root, args.to, args.below_floor)
    return _status(root, args.output)


def _rollback(root: Path, to: str | None, below_floor: bool = False) -> int:
    from modelferry.edge import rollback

    outcome = rollback(root, to=to, allow_below_floor=below_floor)
    assert outcome.previous is not None
    left = outcome.previous
    direction = "forward" if outcome.forward else "back"
    print(
        f"Rolled {direction} {root}: {left.label} -> {outcome.current.label} is current; "
        f"{left.label} stays installed (`--to {left.version}` makes it current again)."
    )
    return 0


def _status(root: Path, output: str = "text") -> int:
    from modelferry.edge import StateStore, current_version

    with StateStore(root).reading() as state:
        current = current_version(root)
    recent = list(state.deliveries.values())[-_RECENT_DELIVERIES:]
    if output == "json":
        current_label = current.label if current else None
        print_json(
            {
                "root": str(root),
                "current": _version_json(current) if current else None,
                "installed": [
                    {**_version_json(entry), "current": entry.label == current_label}
                    for entry in reversed(state.history)
                ],
                "recent_deliveries": [_delivery_json(record) for record in reversed(recent)],
                "version_floors": dict(state.version_floors),
            }
        )
        return 0
    print(f"current: {current.label if current else 'nothing installed'}")
    for entry in reversed(state.history):
        marker = "*" if current and entry.label == current.label else " "
        model = f"{entry.model_name} v{entry.model_version}" if entry.model_name else "-"
        print(f" {marker} {entry.label:<32} {model:<32} {entry.installed_at}")
    for model_name, floor in sorted(state.version_floors.items()):
        print(f"anti-rollback floor: {model_name} >= {floor}")
    if recent:
        print("recent deliveries:")
    for record in reversed(recent):
        reason = record.attributes.get("reason", "")
        print(
            f"   {record.delivery_id:<38} {record.package_id}/{record.package_version:<12} "
            f"{record.state}" + (f": {reason}" if reason else "")
        )
    return 0


def _version_json(entry: InstalledVersion) -> dict[str, Any]:
    return {
        "package_id": entry.package_id,
        "version": entry.version,
        "model_name": entry.model_name or None,
        "model_version": entry.model_version or None,
        "delivery_id": entry.delivery_id or None,
        "installed_at": iso_utc_text(entry.installed_at),
    }


def _delivery_json(record: DeviceDeliveryState) -> dict[str, Any]:
    # Only the reason from the attributes: the rest is protocol detail, not status.
    reason = record.attributes.get("reason")
    return {
        "delivery_id": record.delivery_id,
        "project_id": record.project_id,
        "package_id": record.package_id,
        "package_version": record.package_version,
        "state": record.state,
        "reason": str(reason) if reason else None,
        "updated_at": iso_utc_text(record.updated_at),
    }


def _run(args: argparse.Namespace) -> int:
    from modelferry.edge import (
        AgentSettings,
        EdgeAgent,
        SmokeSettings,
        create_agents,
        load_public_keys,
    )
    from modelferry.packaging.trust import TrustPolicy

    try:
        log_format = args.log_format or load_settings().log_format
    except InvalidConfigError as exc:
        print(_usage(str(exc)), file=sys.stderr)
        return 2
    configure_logging(args.log_level, log_format)
    if args.root is None:
        print(_usage("give --root, the agent's folder"), file=sys.stderr)
        return 2
    if not args.public_key and args.trust_file is None:
        message = "give at least one --public-key (or a --trust-file) to trust"
        print(_usage(message), file=sys.stderr)
        return 2
    try:
        policy = TrustPolicy.load(args.trust_file) if args.trust_file else TrustPolicy()
    except TrustFileError as exc:
        print(_usage(f"--trust-file: {exc}"), file=sys.stderr)
        return 2
    try:
        keys = policy.with_keys(load_public_keys(args.public_key))
    except PackageVerificationError as exc:
        print(_usage(f"--public-key: {exc}"), file=sys.stderr)
        return 2
    if not keys:
        print(_usage("no unrevoked package-signing key is trusted"), file=sys.stderr)
        return 2
    if args.require_format_2:
        keys = keys.requiring_format(2)
    settings = AgentSettings(
        keep_versions=max(args.keep_versions, 1),
        link_timeout=args.link_timeout,
        smoke=SmokeSettings(timeout=args.smoke_timeout, python=args.smoke_python),
        smoke_test=not args.no_smoke,
    )
    try:
        transport_for, device_ids = _transports(args)
    except ValueError as exc:
        print(_usage(str(exc)), file=sys.stderr)
        return 2
    if len(device_ids) == 1:
        # One device: its files live in --root itself, not in a subfolder.
        agents = [EdgeAgent(transport_for(device_ids[0]), args.root, keys, settings)]
    else:
        agents = create_agents(device_ids, transport_for, args.root, keys, settings)
    return asyncio.run(_serve(agents))


async def _serve(agents: Sequence[EdgeAgent]) -> int:
    from modelferry.edge.local_agents import run_agents, wait_connected

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(number, stop.set)
    running = asyncio.create_task(run_agents(agents, stop))
    connected = asyncio.create_task(wait_connected(agents))
    await asyncio.wait({running, connected}, return_when=asyncio.FIRST_COMPLETED)
    if connected.done():
        shown = ", ".join(agent.device_id for agent in agents[:5])
        more = f" and {len(agents) - 5} more" if len(agents) > 5 else ""
        logging.getLogger(__name__).info("edge agent(s) %s%s connected", shown, more)
    connected.cancel()
    await running
    return 0


def _transports(args: argparse.Namespace) -> tuple[Callable[[str], DeviceTransport], list[str]]:
    """The transport factory and device ids the options describe; ValueError if incomplete."""
    if args.transport == "iothub":
        from pydantic import SecretStr

        from modelferry.delivery.channels.iothub.channel import IoTHubDeviceTransport

        text = _environment(args.connection_string_env, "--connection-string-env")
        transport = IoTHubDeviceTransport.from_connection_string(
            SecretStr(text), ca_file=args.ca_file
        )
        if args.device_id and args.device_id != [transport.device_id]:
            raise ValueError(
                f"the connection string is for device {transport.device_id!r}, "
                f"not {', '.join(args.device_id)}"
            )
        return (lambda device_id: transport), [transport.device_id]
    if args.device_ids_file is not None:
        try:
            lines = args.device_ids_file.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise ValueError(
                f"--device-ids-file: cannot read {args.device_ids_file}: {exc}"
            ) from None
        args.device_id = [*args.device_id, *(line.strip() for line in lines if line.strip())]
    if not args.device_id:
        raise ValueError("give --device-id (repeat it to run several agents)")
    if len(set(args.device_id)) != len(args.device_id):
        raise ValueError("each --device-id may be given once")
    if args.transport == "local":
        from modelferry.delivery.channels.local import LocalDeviceTransport, default_hub

        hub = default_hub()
        return (lambda device_id: LocalDeviceTransport(device_id, hub)), list(args.device_id)
    from pydantic import SecretStr

    from modelferry.delivery.channels.mqtt.channel import MqttBroker, MqttDeviceTransport

    password = None
    if args.password_env:
        password = SecretStr(_environment(args.password_env, "--password-env"))
    broker = MqttBroker(
        host=args.broker_host,
        port=args.broker_port,
        username=args.username,
        password=password,
        tls=args.tls,
        ca_file=args.ca_file,
        protocol=args.mqtt_protocol,
    )
    return (lambda device_id: MqttDeviceTransport(device_id, broker)), list(args.device_id)


def _environment(name: str | None, option: str) -> str:
    if not name:
        raise ValueError(f"{option} must name an environment variable")
    # Taken out of the environment, so that no child (the smoke prediction runs the
    # package's own code) inherits the secret.
    value = os.environ.pop(name, None)
    if not value:
        raise ValueError(f"{option}: the environment variable {name} is not set")
    return value


def _usage(message: str) -> str:
    return f"modelferry agent: error: {message}"
