"""Prefect's sync/async dual functions, called as the sync functions our code needs."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")


def call_sync(
    dual: Callable[P, R | Coroutine[Any, Any, R]], /, *args: P.args, **kwargs: P.kwargs
) -> R:
    """Call one of Prefect's `async_dispatch` functions by its sync implementation.

    `Block.load`, `RunInput.load` and the artifact functions pick an implementation by
    where they are called: from what looks like async code (a thread with a running loop,
    an async flow) they return a coroutine, so their types say ``R | Coroutine[..., R]``.
    Our callers are sync. The wrapper takes a `_sync=True` keyword that forces the sync
    implementation, but its signature does not show it: this is the one place that passes
    it, so callers keep the function's own argument and result types.
    """
    dispatching: Callable[..., Any] = dual
    result: R = dispatching(*args, _sync=True, **kwargs)
    return result
