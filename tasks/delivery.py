"""Edge delivery steps: find the package, roll it out to the fleet, report per device.

None of these is cached or retried by Prefect: a rollout retries each device itself (with
a new deliveryId), and running it again would deliver again to devices that succeeded.
"""

from __future__ import annotations

import asyncio
import re

from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import SecretStr

from modelferry.delivery.channels.base import DeliveryChannel
from modelferry.delivery.fleet import roll_out
from modelferry.delivery.outcomes import FleetResult
from modelferry.delivery.plan import DeliveryPlan, FleetPolicy, require_package
from modelferry.delivery.records.store import DEFAULT_RECORDS_URL, DeliveryRecords
from modelferry.progress import ProgressCallback
from modelferry.settings import load_settings
from modelferry.stores.base import PackageStore, StoredPackage


@task(name="find-edge-package", cache_policy=NO_CACHE, timeout_seconds=300)
def find_edge_package(store: PackageStore, package_id: str, version: str) -> StoredPackage:
    """The package in the store; `PackageStoreError` saying how to build it when missing."""
    return require_package(store, package_id, version)


@task(name="roll-out-package", cache_policy=NO_CACHE)
async def roll_out_package(
    plan: DeliveryPlan,
    policy: FleetPolicy,
    channel: DeliveryChannel,
    store: PackageStore,
    records_url: SecretStr | None,
    rollout_id: str,
    on_progress: ProgressCallback | None = None,
) -> FleetResult:
    """Deliver the plan's package to its devices; every attempt goes to the records.

    The rollout's own clocks bound it (inactivity, deadline, retries), so the task has no
    timeout of its own. `on_progress` is told (devices finished, devices) on the event
    loop: it must not block (see `tasks.progress.LiveProgressArtifact`).
    """
    # Not given: MODELFERRY_RECORDS_URL, as `modelferry db upgrade` reads it, else SQLite.
    secret = records_url or load_settings().records_url
    url = secret.get_secret_value() if secret else DEFAULT_RECORDS_URL
    records = await asyncio.to_thread(DeliveryRecords, url)
    try:
        return await roll_out(
            plan,
            channel,
            store,
            records=records,
            policy=policy,
            log=get_run_logger(),
            rollout_id=rollout_id,
            on_progress=on_progress,
        )
    finally:
        records.close()


def report_key(deploy_env: str, model_name: str) -> str:
    """The artifact key of a delivery report: lowercase letters, digits and dashes."""
    return re.sub(r"[^a-z0-9-]+", "-", f"delivery-{deploy_env}-{model_name}".lower()).strip("-")


@task(name="publish-delivery-report", cache_policy=NO_CACHE)
def publish_delivery_report(
    result: FleetResult, key: str, description: str, chart: str | None = None
) -> list[dict[str, str | int | float]]:
    """Publish one row per device (state, attempts, duration, error) as a table artifact.

    `chart` names the fleet chart in the model version's MLflow run, when one was drawn.
    """
    table = result.table()
    seen = f"\n\nFleet chart: `{chart}` in the model version's MLflow run" if chart else ""
    create_table_artifact(
        table=table,
        key=key,
        description=f"{description}\n\n{result.summary()}{seen}",
    )
    return table
