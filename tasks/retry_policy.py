"""When a task is worth retrying: only transient failures, with exponential backoff."""

from __future__ import annotations

from typing import Any

from prefect.tasks import exponential_backoff

from modelferry.registry import is_transient

#: Retries of a step that talks to MLflow; delays 2 s, 4 s, 8 s.
TRANSIENT_RETRIES = 3
TRANSIENT_RETRY_DELAYS = exponential_backoff(backoff_factor=2)(TRANSIENT_RETRIES)


def retry_on_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry condition for Prefect tasks: retry unreachable/busy services, nothing else.

    A bad input or a refused request fails the same way every time; retrying it only
    delays the error the user needs to see.
    """
    exc = state.data if isinstance(state.data, BaseException) else None
    if exc is None:
        try:
            result = state.result(raise_on_failure=False)
        except Exception as error:  # the result itself could not be read
            result = error
        exc = result if isinstance(result, BaseException) else None
    return exc is not None and is_transient(exc)
