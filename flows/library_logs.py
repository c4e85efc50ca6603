"""The library's log records reach the Prefect run they were logged in.

The library logs with the standard `logging` module under `modelferry.*` and knows
nothing of Prefect. Prefect sends a record to the API, where the UI shows it with the
run, only from its own loggers and those named in `PREFECT_LOGGING_EXTRA_LOGGERS`; it
reads that list once, when it sets up logging as it is imported. Without `modelferry` in
it, a library warning (the batch scoring with LightGBM's own predictor because its trees
could not be compiled, say) is on the console and missing from the run.

The entry points (`python -m flows.…`, `python -m deployments.…`) call
`send_library_logs_to_runs()` before Prefect is imported; prefect.yaml sets the same
variables for work-pool runs.
"""

from __future__ import annotations

import os
from typing import Final

__all__ = ["EXTRA_LOGGERS_ENV", "LIBRARY_LOGGER", "MISSING_RUN_ENV", "send_library_logs_to_runs"]

LIBRARY_LOGGER: Final = "modelferry"
EXTRA_LOGGERS_ENV: Final = "PREFECT_LOGGING_EXTRA_LOGGERS"
MISSING_RUN_ENV: Final = "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW"


def send_library_logs_to_runs() -> None:
    """Add `modelferry` to this process's `PREFECT_LOGGING_EXTRA_LOGGERS`.

    The loggers already listed there are kept (comma-separated, as Prefect reads it).

    The library also logs outside any run: in the serve process, in the threads of the
    in-process edge agents and delivery records. Prefect's default for such a record is a
    second warning, "attempted to send logs to the API without a flow run id" (an error
    where warnings are errors); `PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW` defaults to
    `ignore` instead, so the record is on the console only. A value already set wins.
    """
    listed = [name.strip() for name in os.environ.get(EXTRA_LOGGERS_ENV, "").split(",")]
    names = [name for name in listed if name]
    if LIBRARY_LOGGER not in names:
        os.environ[EXTRA_LOGGERS_ENV] = ",".join([*names, LIBRARY_LOGGER])
    os.environ.setdefault(MISSING_RUN_ENV, "ignore")
