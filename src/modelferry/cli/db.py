"""`modelferry db upgrade`: migrate modelferry's databases to this release's schema.

modelferry db upgrade                              both stores at their default places
modelferry db upgrade --records URL_OR_PATH        the delivery records only
modelferry db upgrade --endpoints HOME             the local endpoint state only

Opening a store migrates it too; this command does it on purpose, e.g. right after an
upgrade of modelferry, before the flows run. `--records` takes a SQLAlchemy URL
(`postgresql+psycopg://user@host/db`) or the path of a SQLite file; without it the URL
is $MODELFERRY_RECORDS_URL, else the default SQLite file. Without options, a default
SQLite file that does not exist yet is left alone; a store named with an option is
created when missing. Each store prints its schema revision before -> after.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from modelferry.cli.help import UsageLinesHelpFormatter
from modelferry.settings import load_settings

if TYPE_CHECKING:
    from modelferry.migrations import SchemaUpgrade

__all__ = ["add_db_command"]

#: Where the delivery records are unless `--records` says otherwise.
RECORDS_URL_ENV = "MODELFERRY_RECORDS_URL"


def add_db_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `db upgrade` on the top-level parser."""
    db = commands.add_parser(
        "db",
        help="migrate modelferry's databases (db upgrade)",
        description=__doc__,
        formatter_class=UsageLinesHelpFormatter,
    )
    actions = db.add_subparsers(dest="action", metavar="ACTION", required=True)
    upgrade = actions.add_parser(
        "upgrade",
        help="bring the delivery records and endpoint state to this release's schema",
        description=__doc__,
        formatter_class=UsageLinesHelpFormatter,
    )
    upgrade.add_argument(
        "--records",
        metavar="URL_OR_PATH",
        help=f"delivery records: SQLAlchemy URL or SQLite file (default: ${RECORDS_URL_ENV} "
        "or .modelferry/deliveries.db)",
    )
    upgrade.add_argument(
        "--endpoints",
        metavar="HOME",
        type=Path,
        help="local endpoint state folder (default: .modelferry/endpoints)",
    )
    upgrade.set_defaults(handler=_cmd_upgrade)


def _cmd_upgrade(args: argparse.Namespace) -> int:
    # Imported here: alembic and SQLAlchemy stay out of every other command's start-up.
    from modelferry.cli.endpoints import DEFAULT_ENDPOINTS_HOME
    from modelferry.delivery.records.store import DEFAULT_RECORDS_URL

    named = args.records is not None or args.endpoints is not None
    if args.records is not None or not named:
        configured = load_settings().records_url
        from_env = configured.get_secret_value() if configured is not None else None
        url = _records_url(args.records or from_env or DEFAULT_RECORDS_URL)
        required = args.records is not None or from_env is not None
        if not _upgrade_records(url, required=required):
            return 2
    if args.endpoints is not None or not named:
        home = args.endpoints if args.endpoints is not None else DEFAULT_ENDPOINTS_HOME
        _upgrade_endpoints(home / "endpoints.db", required=args.endpoints is not None)
    return 0


def _records_url(url_or_path: str) -> str:
    return url_or_path if "://" in url_or_path else f"sqlite:///{Path(url_or_path)}"


def _upgrade_records(url: str, *, required: bool) -> bool:
    """Upgrade the records at `url`; False (after saying why) when `url` is no usable URL."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    from modelferry.data.masking import mask_url, scrub
    from modelferry.delivery.records.schema import create_records_engine
    from modelferry.delivery.records.store import upgrade_records_schema

    shown = mask_url(url)
    try:
        parsed = make_url(url)
        database = parsed.database
        sqlite_file = parsed.get_backend_name() == "sqlite" and database
        if not required and sqlite_file and not Path(str(database)).exists():
            print(f"delivery records at {shown}: none yet, nothing to upgrade")
            return True
        engine = create_records_engine(url)
    except (ArgumentError, ValueError) as exc:  # ArgumentError: also an unknown dialect
        print(
            f"modelferry db upgrade: error: the delivery records URL {shown} is not one "
            f"SQLAlchemy can open ({scrub(str(exc), url)}); give a SQLite file path or a "
            "URL such as postgresql+psycopg://USER@HOST/DATABASE",
            file=sys.stderr,
        )
        return False
    try:
        _report(f"delivery records at {shown}", upgrade_records_schema(engine))
    finally:
        engine.dispose()
    return True


def _upgrade_endpoints(path: Path, *, required: bool) -> None:
    from modelferry.endpoints.local.state import upgrade_endpoint_schema

    if not required and not path.exists():
        print(f"endpoint state at {path}: none yet, nothing to upgrade")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    _report(f"endpoint state at {path}", upgrade_endpoint_schema(path))


def _report(store: str, upgrade: SchemaUpgrade) -> None:
    before = "(before migrations)" if upgrade.unversioned else upgrade.before or "(none)"
    up_to_date = upgrade.before == upgrade.after and not upgrade.unversioned
    change = "up to date" if up_to_date else "upgraded"
    print(f"{store}: {before} -> {upgrade.after} ({change})")
