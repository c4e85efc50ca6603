"""`sync_result`: a dual sync/async Prefect method's result, called from synchronous code."""

from __future__ import annotations

import pytest

from deployments.dispatch import sync_result


async def _answer() -> int:
    return 42


def test_a_value_passes_through() -> None:
    assert sync_result(42) == 42


def test_a_coroutine_is_closed_and_refused() -> None:
    coroutine = _answer()
    with pytest.raises(TypeError, match="inside an event loop"):
        sync_result(coroutine)
    # Closed, so no "coroutine was never awaited" warning (an error under pytest here).
    assert coroutine.cr_frame is None
