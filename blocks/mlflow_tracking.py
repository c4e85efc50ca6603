"""Prefect block: where MLflow is and how to sign in to it."""

from __future__ import annotations

from prefect.blocks.core import Block
from pydantic import ConfigDict, Field, SecretStr, model_validator

from modelferry.registry import TrackingSettings


class MlflowTracking(Block):
    """An MLflow tracking server (and registry) for modelferry flows.

    Save one in the Prefect UI or in code, then name it in the flows' `targets.tracking`;
    prefect.yaml then refers to the block and never holds a secret:

        MlflowTracking(tracking_uri="https://mlflow.example.com",
                       username="ci", password="...").save("production")
    """

    _block_type_name = "modelferry MLflow Tracking"
    _block_type_slug = "modelferry-mlflow-tracking"
    _description = "MLflow tracking server and model registry used by modelferry flows."
    # A validation error would otherwise echo the raw input, password and token included.
    model_config = ConfigDict(hide_input_in_errors=True)

    tracking_uri: str = Field(description="MLflow tracking URI, e.g. https://mlflow.example.com.")
    registry_uri: str | None = Field(
        default=None, description="Model registry URI, when it is not the tracking server."
    )
    artifact_location: str | None = Field(
        default=None, description="Artifact root for experiments modelferry creates."
    )
    username: str | None = Field(default=None, description="HTTP basic-auth user.")
    password: SecretStr | None = Field(default=None, description="HTTP basic-auth password.")
    token: SecretStr | None = Field(
        default=None, description="Bearer token (instead of a password)."
    )

    @model_validator(mode="after")
    def _one_way_to_sign_in(self) -> MlflowTracking:
        if self.token is not None and (self.username or self.password is not None):
            raise ValueError("set either a token or a username and password, not both")
        if (self.username is None) != (self.password is None):
            raise ValueError("a username needs a password and a password needs a username")
        if "@" in self.tracking_uri.split("://", 1)[-1].split("/", 1)[0]:
            raise ValueError(
                "tracking_uri must not embed credentials (user:secret@host); "
                "put them in username/password or token, which are kept secret"
            )
        return self

    def get_settings(self) -> TrackingSettings:
        """The library's tracking settings; secrets stay wrapped until a client is built."""
        return TrackingSettings(
            tracking_uri=self.tracking_uri,
            registry_uri=self.registry_uri,
            artifact_location=self.artifact_location,
            username=self.username,
            password=self.password,
            token=self.token,
        )
