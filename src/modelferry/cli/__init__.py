"""The `modelferry` command: validate configs, approve runs, run endpoints, agents, migrations.

`main` is the console script's entry point. Each group of commands has its module here
(`approval`, `endpoints`, `agent`, `db`), imported only when the parser is built, so that
a command loads only what it needs.

Exit codes: 0 success; 1 the Prefect API (or another modelferry step) failed; 2 a usage
error, an invalid config, or an operation the chosen backend does not offer. Errors print
one message on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final, cast

from modelferry import __version__
from modelferry.cli.exit_codes import (
    EXIT_BROKEN_PIPE,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
)
from modelferry.cli.help import CommandParser
from modelferry.cli.output import print_error
from modelferry.errors import InvalidConfigError, ModelferryError, OperationNotSupportedError
from modelferry.telemetry_opt_out import opt_out_of_telemetry

if TYPE_CHECKING:
    from modelferry.config import ModelConfig

__all__ = ["EXIT_BROKEN_PIPE", "EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "main"]

# The extras to name first when a command's module is missing: the agent runs on devices,
# a reviewer needs only Prefect's client; everything else runs on the orchestrator side.
_PREFERRED_EXTRAS: Final = {
    "agent": ["edge", "orchestrator"],
    "pending": ["approval", "orchestrator"],
    "approve": ["approval", "orchestrator"],
}
# Import names of the distributions whose name does not say it.
_IMPORT_NAMES: Final = {"scikit_learn": "sklearn", "pyyaml": "yaml", "paho_mqtt": "paho"}


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
    except (InvalidConfigError, OperationNotSupportedError) as exc:
        print_error(str(exc))
        return EXIT_USAGE
    except ModelferryError as exc:
        print_error(str(exc))
        return EXIT_FAILED
    except ModuleNotFoundError as exc:
        # A command that needs an extra the install lacks: say which, never a traceback.
        message = _missing_extra(args, exc)
        if message is None:
            raise  # No module modelferry installs: a bug, shown with where it happened.
        print_error(message)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print_error("interrupted")
        return EXIT_INTERRUPTED
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

    from modelferry.cli.approval import add_approval_commands

    add_approval_commands(commands)
    from modelferry.cli.endpoints import add_endpoint_commands

    add_endpoint_commands(commands)
    from modelferry.cli.agent import add_agent_command

    add_agent_command(commands)
    from modelferry.cli.db import add_db_command

    add_db_command(commands)
    return parser


def _cmd_validate(args: argparse.Namespace) -> int:
    # Imported here so `pending` and `approve` work without loading the training stack.
    from modelferry.config import load_config

    config = load_config(args.config)
    print(f"{args.config}: OK: {_summarise(config)}")
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
