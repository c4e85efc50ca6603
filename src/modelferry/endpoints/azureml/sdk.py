"""Using the optional Azure ML SDK: importing it, waiting on its operations, its errors."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, TypeVar

from modelferry.errors import EndpointError, EndpointNotFoundError
from modelferry.extras import install_hint, requires_extra

if TYPE_CHECKING:
    from azure.core.polling import LROPoller

INSTALL_HINT = install_hint("azure")

_T = TypeVar("_T")
logger = logging.getLogger(__name__)


@contextmanager
def azure_sdk(purpose: str = "Azure ML endpoints") -> Iterator[None]:
    """Wrap imports of `azure.*`: a missing or broken SDK raises an ImportError naming the extra.

    Example:
        with azure_sdk():
            from azure.ai.ml.entities import ManagedOnlineEndpoint
    """
    with requires_extra("azure", purpose, "the Azure SDKs"):
        yield


@contextmanager
def azure_errors(
    doing: str, missing: str | None = None, *, endpoint: str = "", deployment: str = ""
) -> Iterator[None]:
    """Re-raise Azure's errors as modelferry's.

    Args:
        doing: what was being done, e.g. "deleting endpoint 'churn'".
        missing: what a "not found" answer means, e.g. "endpoint 'churn'"; with it, such
            an answer raises `EndpointNotFoundError`, without it `EndpointError`.
        endpoint: the endpoint concerned, set on the error raised.
        deployment: the deployment concerned, set on the error raised.
    """
    context = {"endpoint": endpoint, "deployment": deployment}
    with azure_sdk():
        from azure.core.exceptions import AzureError, ResourceNotFoundError
    try:
        yield
    except ResourceNotFoundError as exc:
        if missing is None:
            raise EndpointError(f"Azure ML refused {doing}: {first_line(exc)}", **context) from exc
        raise EndpointNotFoundError(f"{missing} does not exist in Azure ML", **context) from exc
    except AzureError as exc:
        raise EndpointError(f"Azure ML refused {doing}: {first_line(exc)}", **context) from exc


def wait_for(poller: LROPoller[_T], what: str, timeout_s: float, poll_interval_s: float) -> _T:
    """The result of a long-running operation, checked every `poll_interval_s`.

    Raises:
        EndpointError: it did not finish within `timeout_s` (it may still finish later).
        azure.core.exceptions.AzureError: it failed (the SDK's error, for `azure_errors`).
    """
    deadline = time.monotonic() + timeout_s
    while not poller.done():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise EndpointError(
                f"{what} did not finish within {timeout_s:.0f} s; Azure ML may still be "
                "working on it, see the endpoint's page in the workspace"
            )
        poller.wait(timeout=min(poll_interval_s, remaining))
        logger.debug("waiting for %s: %s", what, poller.status())
    return poller.result()


def first_line(exc: BaseException) -> str:
    """The first line of an error's message (Azure's can run to pages)."""
    lines = str(exc).strip().splitlines()
    return lines[0][:300] if lines else type(exc).__name__
