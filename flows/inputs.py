r"""The flows' typed inputs: where the work goes (`Targets`) and how a rollout goes (`Rollout`).

Prefect renders each model as a form in the UI and validates it before a run starts; an
unknown or bad field is refused with its name. From the command line:

    prefect deployment run retrain-and-deliver/nightly \
        -p targets='{"store": "modelferry-azure-blob-package-store/production"}' \
        -p rollout='{"strategy": "blue-green", "step_seconds": 120}'

The same objects go down from the nightly flow to its subflows.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from blocks.base import DeliveryChannelBlock, EndpointBackendBlock, PackageStoreBlock, load_block
from blocks.mlflow_tracking import MlflowTracking
from blocks.package_store import LocalPackageStoreBlock
from blocks.signing_key import PackageSigningKey
from modelferry.delivery.channels.local import LocalChannel
from modelferry.endpoints.rollout import RolloutPolicy, Strategy
from modelferry.errors import InvalidConfigError
from modelferry.packaging import SigningKey, development_signing_key
from modelferry.registry import TrackingSettings
from modelferry.registry.tracking import DEFAULT_HOME
from tasks.sync_calls import call_sync

if TYPE_CHECKING:
    from modelferry.delivery.channels.base import DeliveryChannel
    from modelferry.endpoints.backend import EndpointBackend
    from modelferry.registry import ModelRegistry
    from modelferry.stores.base import PackageStore

DEFAULT_ENDPOINTS_HOME = str(DEFAULT_HOME / "endpoints")
_PASSWORD_IN_URL = r"://[^/@\s]*:[^/@\s]*@"


class Targets(BaseModel):
    """Where a run's work goes: each a saved block, or the embedded default when empty.

    Blocks of one type are named by their name; a capability with several block types
    (endpoints, store, channel) by ``block-type-slug/name``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    tracking: str | None = Field(
        default=None,
        description="A saved MlflowTracking block; empty for tracking_uri or the embedded store.",
    )
    tracking_uri: str | None = Field(
        default=None,
        description="MLflow tracking URI, without credentials; default MLFLOW_TRACKING_URI, "
        "else the embedded SQLite store.",
    )
    endpoints: str | None = Field(
        default=None,
        description="An endpoint backend block (e.g. modelferry-azureml-workspace/prod); "
        "empty for the local backend.",
    )
    endpoints_home: str = Field(
        default=DEFAULT_ENDPOINTS_HOME, description="State folder of the local endpoint backend."
    )
    store: str | None = Field(
        default=None,
        description="A package store block (slug/name); empty for the local store.",
    )
    channel: str | None = Field(
        default=None,
        description="A delivery channel block (slug/name); empty for the in-process channel.",
    )
    signing_key: str | None = Field(
        default=None,
        description="A saved PackageSigningKey block; empty for the development key.",
    )
    records: str | None = Field(
        default=None,
        description="A Prefect Secret block holding the delivery records URL (one with a "
        "password); empty for records_url.",
    )
    records_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the delivery records, without a password; default "
        "MODELFERRY_RECORDS_URL, else SQLite.",
    )

    @model_validator(mode="after")
    def _one_of_each(self) -> Targets:
        if self.tracking and self.tracking_uri:
            raise ValueError("give tracking (a block) or tracking_uri, not both")
        if self.records and self.records_url:
            raise ValueError("give records (a Secret block) or records_url, not both")
        return self

    @property
    def local_channel(self) -> bool:
        """True for the embedded in-process channel (no channel block)."""
        return not self.channel

    def tracking_settings(self) -> TrackingSettings:
        """MLflow's settings: from the block, the URI, `MLFLOW_TRACKING_URI` or embedded."""
        return load_block(
            self.tracking,
            MlflowTracking,
            lambda: TrackingSettings.resolve(self.tracking_uri),
            MlflowTracking.get_settings,
        )

    def endpoint_backend(
        self, registry: ModelRegistry, settings: TrackingSettings
    ) -> EndpointBackend:
        """The endpoint backend: the block's, else the local one under `endpoints_home`."""
        from pathlib import Path

        from modelferry.endpoints.local import LocalEndpointBackend

        return load_block(
            self.endpoints,
            EndpointBackendBlock,
            lambda: LocalEndpointBackend(Path(self.endpoints_home), settings),
            lambda block: block.get_backend(registry),
        )

    def package_store(self) -> PackageStore:
        """The package store: the block's, else the local one under `.modelferry/packages`."""
        return load_block(
            self.store,
            PackageStoreBlock,
            LocalPackageStoreBlock().get_store,
            lambda block: block.get_store(),
        )

    def delivery_channel(self) -> DeliveryChannel:
        """The delivery channel: the block's, else the in-process one (not yet open)."""
        return load_block(
            self.channel, DeliveryChannelBlock, LocalChannel, lambda block: block.get_channel()
        )

    def package_signing_key(self) -> SigningKey:
        """The key packages are signed with: the block's, else the development key."""
        return load_block(
            self.signing_key,
            PackageSigningKey,
            development_signing_key,
            PackageSigningKey.get_signing_key,
        )

    def records_secret(self) -> SecretStr | None:
        """The delivery records URL, from the Secret block or `records_url`; else None.

        A `records_url` with a password is refused here, not when the parameters are
        validated: Prefect logs a refused parameter's value with the error.
        """
        if self.records_url and re.search(_PASSWORD_IN_URL, self.records_url):
            # Flow run parameters are stored as given; the URL is not repeated here.
            raise InvalidConfigError(
                "targets.records_url holds a password, and flow run parameters are stored as "
                "given: save the URL in a Prefect Secret block and name it in targets.records",
                key="targets.records_url",
            )
        if self.records:
            from prefect.blocks.system import Secret

            try:
                return SecretStr(str(call_sync(Secret.load, self.records).get()))
            except ValueError as exc:
                if "Unable to find block document" not in str(exc):
                    raise
                raise InvalidConfigError(
                    f"no Secret block {self.records!r} is saved (targets.records)"
                ) from None
        return SecretStr(self.records_url) if self.records_url else None


class Rollout(BaseModel):
    """How a model version reaches an online endpoint, and what each traffic step must show.

    The strategy and endpoint, and the `RolloutPolicy` every step is judged by.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    endpoint: str | None = Field(
        default=None, description="Endpoint name; default the registered model's name."
    )
    strategy: Strategy = Field(
        default="canary",
        description="canary (traffic in steps) or blue-green (switch at once, then watch).",
    )
    steps: tuple[int, ...] | None = Field(
        default=None,
        description="Canary percentages for the new deployment, ending at 100; default "
        "10, 50, 100 (100 for blue-green).",
    )
    step_seconds: float = Field(default=60.0, ge=0, description="How long each step is watched.")
    max_error_rate: float = Field(
        default=0.01, ge=0, le=1, description="Highest 5xx share the new deployment may show."
    )
    max_p99_ms: float = Field(default=250.0, gt=0, description="Highest p99 latency (ms).")
    min_requests: int = Field(default=20, ge=0, description="Fewest requests to judge a step.")
    require_traffic: bool = Field(
        default=False, description="Fail a step that saw fewer than min_requests."
    )
    demo_traffic: bool = Field(
        default=False,
        description="Replay the model's test rows through the endpoint while each step is "
        "held (demos and quiet test endpoints; never on by default).",
    )

    @model_validator(mode="after")
    def _consistent(self) -> Rollout:
        if self.steps is not None and (not self.steps or self.steps[-1] != 100):
            raise ValueError("steps must end at 100")
        if self.steps is not None and any(not 0 < s <= 100 for s in self.steps):
            raise ValueError("steps are percentages above 0 and at most 100")
        if self.demo_traffic and self.step_seconds <= 0:
            raise ValueError(
                "demo_traffic replays rows while each step is held: give step_seconds above 0"
            )
        return self

    def policy(self) -> RolloutPolicy:
        """The library's policy for this rollout's steps."""
        default = (100,) if self.strategy == "blue-green" else (10, 50, 100)
        return RolloutPolicy(
            steps=self.steps or default,
            step_seconds=self.step_seconds,
            max_error_rate=self.max_error_rate,
            max_p99_ms=self.max_p99_ms,
            min_requests=self.min_requests,
            require_traffic=self.require_traffic,
        )
