"""The result of a Prefect method that runs sync or async depending on its caller.

Prefect 3 marks such methods (`Block.save`, `Automation.create`, `Flow.to_deployment`, ...)
with `@async_dispatch`, and types their result as `R | Coroutine[Any, Any, R]`: called
from synchronous code outside an event loop, as these scripts are, they return `R`.
`sync_result` states that in the types, and fails loudly where it does not hold.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["sync_result"]

R = TypeVar("R")


def sync_result(value: R | Coroutine[Any, Any, R]) -> R:
    """`value` itself, the result of a dual sync/async Prefect method called synchronously.

    Raises:
        TypeError: the method ran in an event loop and returned a coroutine; call its
            `a`-prefixed variant (`acreate`, `asave`) and await it there instead.
    """
    if isinstance(value, Coroutine):
        value.close()  # never awaited: close it, so no "never awaited" warning follows
        raise TypeError(
            "a Prefect method returned a coroutine: it was called inside an event loop; "
            "await its async variant there instead"
        )
    return value
