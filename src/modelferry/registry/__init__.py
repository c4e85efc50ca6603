"""MLflow: tracking settings, run logging, registered versions and their aliases."""

from modelferry.registry.lineage import git_commit, lineage_tags
from modelferry.registry.runs import LoggedRun, log_training_run, pip_requirements
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
    "PREVIOUS_CHAMPION",
    "LoggedRun",
    "ModelRegistry",
    "RegisteredVersion",
    "TrackingSettings",
    "git_commit",
    "is_transient",
    "lineage_tags",
    "log_training_run",
    "pip_requirements",
    "tracking_errors",
]
