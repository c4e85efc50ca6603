"""The reference edge agent: the device side of the delivery protocol.

`EdgeAgent` handles deliveries for one device over any `DeviceTransport`; `fleet` runs
many in one process; `install` holds the on-disk layout (`ROOT/current`, versions,
rollback). The agent imports nothing of the orchestrator, MLflow or the training stack:
the package's own scoring script runs in a child process for the smoke prediction.
"""

from modelferry.edge.agent import EdgeAgent
from modelferry.edge.download import (
    DownloadFailedError,
    DownloadSettings,
    LinkExpiredError,
    Progress,
    download_package,
)
from modelferry.edge.install import (
    InstallError,
    InstallOutcome,
    current_version,
    install_version,
    rollback,
)
from modelferry.edge.local_agents import (
    AgentThread,
    create_agents,
    create_local_agents,
    run_agents,
    run_local_agents,
    start_local_agents,
)
from modelferry.edge.settings import AgentSettings, load_public_keys
from modelferry.edge.smoke import SmokeResult, SmokeRunner, SmokeSettings, SmokeSpec, SmokeTestError
from modelferry.edge.state import AgentState, DeviceDeliveryState, InstalledVersion, StateStore

__all__ = [
    "AgentSettings",
    "AgentState",
    "AgentThread",
    "DeviceDeliveryState",
    "DownloadFailedError",
    "DownloadSettings",
    "EdgeAgent",
    "InstallError",
    "InstallOutcome",
    "InstalledVersion",
    "LinkExpiredError",
    "Progress",
    "SmokeResult",
    "SmokeRunner",
    "SmokeSettings",
    "SmokeSpec",
    "SmokeTestError",
    "StateStore",
    "create_agents",
    "create_local_agents",
    "current_version",
    "download_package",
    "install_version",
    "load_public_keys",
    "rollback",
    "run_agents",
    "run_local_agents",
    "start_local_agents",
]
