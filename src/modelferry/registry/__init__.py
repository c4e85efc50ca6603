"""MLflow: tracking settings, run logging, registered versions and their aliases.

Names are imported on first use: `TrackingSettings` alone does not load the training stack.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from modelferry.lazy_exports import lazy_exports

if TYPE_CHECKING:
    from modelferry.registry.lineage import git_commit, lineage_tags
    from modelferry.registry.runs import (
        GATE_CHART_ARTIFACT,
        GATE_TABLE_ARTIFACT,
        LoggedRun,
        log_gate_result,
        log_picture,
        log_training_run,
        pip_requirements,
    )
    from modelferry.registry.tracking import (
        DEFAULT_HOME,
        TrackingSettings,
        is_transient,
        tracking_errors,
    )
    from modelferry.registry.versions import (
        CHALLENGER,
        CHAMPION,
        CLASS_NAMES_TAG,
        PREVIOUS_CHAMPION,
        ModelRegistry,
        RegisteredVersion,
    )

__all__ = [
    "CHALLENGER",
    "CHAMPION",
    "CLASS_NAMES_TAG",
    "DEFAULT_HOME",
    "GATE_CHART_ARTIFACT",
    "GATE_TABLE_ARTIFACT",
    "PREVIOUS_CHAMPION",
    "LoggedRun",
    "ModelRegistry",
    "RegisteredVersion",
    "TrackingSettings",
    "git_commit",
    "is_transient",
    "lineage_tags",
    "log_gate_result",
    "log_picture",
    "log_training_run",
    "pip_requirements",
    "tracking_errors",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "git_commit": "lineage",
        "lineage_tags": "lineage",
        "GATE_CHART_ARTIFACT": "runs",
        "GATE_TABLE_ARTIFACT": "runs",
        "LoggedRun": "runs",
        "log_gate_result": "runs",
        "log_picture": "runs",
        "log_training_run": "runs",
        "pip_requirements": "runs",
        "DEFAULT_HOME": "tracking",
        "TrackingSettings": "tracking",
        "is_transient": "tracking",
        "tracking_errors": "tracking",
        "CHALLENGER": "versions",
        "CHAMPION": "versions",
        "CLASS_NAMES_TAG": "versions",
        "PREVIOUS_CHAMPION": "versions",
        "ModelRegistry": "versions",
        "RegisteredVersion": "versions",
    },
)
