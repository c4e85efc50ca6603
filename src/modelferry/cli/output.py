"""`--output {text,json}` for the `modelferry` commands that show state, for scripts.

With `--output json` a command prints one JSON document on stdout (a list or an object)
with snake_case field names and ISO 8601 UTC timestamps ("2026-11-22T01:57:08.339Z", or
null when unknown), and exits with the same codes as with text; errors stay one line on
stderr. Only what a command shows goes in: never a secret.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from datetime import UTC, datetime
from typing import Final

__all__ = [
    "OUTPUT_FORMATS",
    "add_output_option",
    "iso_utc",
    "iso_utc_text",
    "print_error",
    "print_json",
]

OUTPUT_FORMATS: Final = ("text", "json")


def add_output_option(parser: argparse.ArgumentParser, fields: str) -> None:
    """Add `-o/--output {text,json}` (default text), and `fields` to the command's help.

    Args:
        parser: The command's parser.
        fields: What the JSON document holds, e.g. "a list of objects: id, name".
    """
    parser.add_argument(
        "-o",
        "--output",
        choices=OUTPUT_FORMATS,
        default="text",
        help="text for people, json for scripts (one document on stdout)",
    )
    # Wrapped here: a raw-description formatter (`agent`) would print it as one line.
    parser.epilog = textwrap.fill(f"With --output json: {fields}", width=80)


def print_json(document: object) -> None:
    r"""Print `document` as one JSON document on stdout.

    Non-ASCII text is written as it is, or as `\u` escapes (the same JSON) where stdout's
    encoding cannot hold it (`PYTHONIOENCODING=ascii`, a Latin-1 terminal).
    """
    text = json.dumps(document, indent=2, ensure_ascii=False)
    try:
        text.encode(sys.stdout.encoding or "utf-8")
    except (UnicodeEncodeError, LookupError):
        text = json.dumps(document, indent=2)
    print(text)


def print_error(message: str) -> None:
    """Print `message` as the command's one error line on stderr."""
    print(f"modelferry: error: {message}", file=sys.stderr)


def iso_utc(moment: datetime | None) -> str | None:
    """`moment` as ISO 8601 UTC with milliseconds and a `Z`; None stays None.

    A naive datetime is taken as UTC.
    """
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def iso_utc_text(text: str) -> str | None:
    """An ISO 8601 timestamp held as text, in the form `iso_utc` gives; "" becomes None.

    Text that is no timestamp is passed on as it is, so a hand-edited file shows what it
    holds rather than failing the whole command.
    """
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return text
    return iso_utc(moment)
