"""The exit codes of the `modelferry` command, shared by every subcommand."""

from __future__ import annotations

from typing import Final

__all__ = ["EXIT_BROKEN_PIPE", "EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE"]

EXIT_OK: Final = 0
#: The Prefect API, a backend or another modelferry step failed.
EXIT_FAILED: Final = 1
#: A usage error, an invalid config, or an operation the chosen backend does not offer.
EXIT_USAGE: Final = 2
#: 128 + SIGINT, what a shell reports for a command stopped with Ctrl-C.
EXIT_INTERRUPTED: Final = 130
#: 128 + SIGPIPE, what a shell reports for a command whose reader closed the pipe.
EXIT_BROKEN_PIPE: Final = 141
