"""Help texts of the `modelferry` command: every option shows its default."""

from __future__ import annotations

import argparse

__all__ = ["CommandParser", "DefaultsHelpFormatter", "UsageLinesHelpFormatter"]


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Appends "(default: X)" to an option's help when it has a default worth showing.

    Unlike `argparse.ArgumentDefaultsHelpFormatter` it leaves out `None`, `False` and empty
    defaults ("(default: None)" says nothing) and help that already names its default.
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            "%(default)" in text
            or "default:" in text
            or default is None
            or default is False
            or default == ""
            or default == []
            or default is argparse.SUPPRESS
            or not action.option_strings
            or action.nargs == 0  # flags: on/off needs no default
        ):
            return action.help
        return f"{text} (default: %(default)s)"


class UsageLinesHelpFormatter(argparse.RawDescriptionHelpFormatter, DefaultsHelpFormatter):
    """The description as written (it holds usage lines), and each option's default."""


class CommandParser(argparse.ArgumentParser):
    """An `ArgumentParser` whose help shows defaults, for the command and every subcommand.

    Subparsers inherit the class of the parser that creates them, so setting it on the top
    parser reaches `modelferry agent status` as well.
    """

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("formatter_class", DefaultsHelpFormatter)
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
