"""Usage telemetry off by default for every entry point modelferry starts.

Prefect's server and MLflow each report usage to their vendor unless told not to; on a
build agent or a device without internet that is a "Failed to send telemetry" line in
every run. The entry points (`python -m flows.…`, `python -m deployments.…`, the
`modelferry` command) call `opt_out_of_telemetry()` before Prefect or MLflow is imported.
A user who wants to share usage data sets the variable explicitly: the defaults never
override a value that is already set.
"""

from __future__ import annotations

import os
from typing import Final

__all__ = ["TELEMETRY_DEFAULTS", "opt_out_of_telemetry"]

TELEMETRY_DEFAULTS: Final = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    # GitPython, which MLflow uses for the run's commit, warns when no git binary exists.
    "GIT_PYTHON_REFRESH": "quiet",
}


def opt_out_of_telemetry() -> None:
    """Set the telemetry opt-outs in this process's environment where they are unset."""
    for name, value in TELEMETRY_DEFAULTS.items():
        os.environ.setdefault(name, value)
