"""Importing the optional Azure ML SDK, with an error that says how to get it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

INSTALL_HINT = "pip install 'modelferry[azure]'"


@contextmanager
def azure_sdk(purpose: str = "Azure ML endpoints") -> Iterator[None]:
    """Wrap imports of `azure.*`: a missing or broken SDK raises an ImportError naming the extra.

    Example:
        with azure_sdk():
            from azure.ai.ml.entities import ManagedOnlineEndpoint
    """
    try:
        yield
    except ImportError as exc:
        # The original message stays: an installed but broken SDK (a dependency at a
        # version it cannot import) needs a different fix than a missing one.
        raise ImportError(
            f"{purpose} need the Azure SDKs: {INSTALL_HINT} ({type(exc).__name__}: {exc})"
        ) from exc
