"""Optional extras: the one guard around imports of an extra's libraries.

    with requires_extra("azure", "AzureBlobPackageStore", "the Azure SDKs"):
        from azure.storage.blob import BlobServiceClient

A missing library (or an installed one that cannot import) becomes a `MissingExtraError`
naming the extra and the command that installs it, with the original error kept: an SDK
that is there but broken needs a different fix than a missing one.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from modelferry.errors import MissingExtraError

__all__ = ["install_hint", "requires_extra"]


def install_hint(extra: str) -> str:
    """The command that installs `extra`, e.g. ``pip install 'modelferry[azure]'``."""
    return f"pip install 'modelferry[{extra}]'"


@contextmanager
def requires_extra(extra: str, purpose: str, what: str = "") -> Iterator[None]:
    """Turn an ImportError inside the block into a `MissingExtraError` naming `extra`.

    Args:
        extra: The extra that provides the libraries, e.g. "azure".
        purpose: What needs them, as the message's subject, e.g. "IoT Hub delivery".
        what: The libraries in words, e.g. "the Azure SDKs"; default the extra's name.
    """
    try:
        yield
    except MissingExtraError:
        raise
    except ImportError as exc:
        needed = what or f"the {extra!r} extra"
        raise MissingExtraError(
            f"{purpose} cannot run without {needed}: {install_hint(extra)} "
            f"({type(exc).__name__}: {exc})",
            extra=extra,
        ) from exc
