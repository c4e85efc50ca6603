"""The `MODELFERRY_*` environment variables, read and checked in one place.

`load_settings()` reads them all into one validated, frozen `ModelferrySettings`; a value
that is not what its variable wants ends in one `InvalidConfigError` naming every variable
that is wrong and what it expects, never the value (several hold passwords or tokens).
An empty variable counts as unset. Secrets come back as `SecretStr`.

| variable | what | default |
|---|---|---|
| `MODELFERRY_RECORDS_URL` | URL of the delivery records (secret) | `.modelferry/deliveries.db` |
| `MODELFERRY_SQL_URL` | database batch scoring appends predictions to (secret) | none |
| `MODELFERRY_WEBHOOK_URL` | webhook for approval and failure notices (secret) | none |
| `MODELFERRY_WEBHOOK_BLOCK` | a saved `WebhookNotification` block, instead of the URL | none |
| `MODELFERRY_COMPILED_MODELS` | compiled LightGBM trees | `.modelferry/cache/compiled-models` |
| `MODELFERRY_TASK_RESULTS` | folder of cached task results | `.modelferry/cache/task-results` |
| `MODELFERRY_REQUEST_LOG_SAMPLE` | share of successful requests logged, 0 to 1 | 0.1 |
| `MODELFERRY_HEADER_TIMEOUT_S` | seconds a scoring connection has to send a request head | 10 |
| `MODELFERRY_BODY_TIMEOUT_S` | seconds a request has to send its body | 30 |
| `MODELFERRY_MAX_CONNECTIONS` | open connections a scoring server holds | 1000 |
| `MODELFERRY_SERVER_HOST` | interface the team servers listen on | 127.0.0.1 |
| `MODELFERRY_SERVER_PUBLIC_HOST` | host name put in the URLs they print | the host |
| `MODELFERRY_MLFLOW_PORT` | port of the team MLflow server | 5000 |
| `MODELFERRY_MLFLOW_BACKEND_STORE_URI` | its backend store (secret) | SQLite file |
| `MODELFERRY_MLFLOW_ARTIFACTS` | where it keeps artifacts | `.modelferry/server/mlartifacts` |
| `MODELFERRY_LOG_FORMAT` | `text` or `json` logs of the agent and endpoint servers | text |

`MODELFERRY_DELIVERY_RECORDS_URL`, the name `python -m flows.deliver_package` once read, is
still accepted for the records URL. `MODELFERRY_PROJECT_DIR` is read by prefect.yaml's pull
step, and `MODELFERRY_PARAM_*` by `deployments.ci_run`: neither is a setting of the library.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Final, Literal

from pydantic import AfterValidator, AliasChoices, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from modelferry.errors import InvalidConfigError

__all__ = ["ENV_PREFIX", "ModelferrySettings", "load_settings"]

#: What every variable's name starts with.
ENV_PREFIX: Final = "MODELFERRY_"


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError("must be finite")
    return value


Seconds = Annotated[float, Field(gt=0), AfterValidator(_finite)]


class ModelferrySettings(BaseSettings):
    """Every `MODELFERRY_*` setting; build it with `load_settings()`."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_ignore_empty=True,
        extra="ignore",
        frozen=True,
        # Errors must never carry a value: several of these hold passwords or tokens.
        hide_input_in_errors=True,
    )

    records_url: SecretStr | None = Field(
        default=None,
        description="a SQLAlchemy URL of the delivery records database, e.g. "
        "postgresql+psycopg://USER:PASSWORD@db:5432/deliveries or sqlite:///deliveries.db",
        validation_alias=AliasChoices(
            "MODELFERRY_RECORDS_URL", "MODELFERRY_DELIVERY_RECORDS_URL", "records_url"
        ),
    )
    sql_url: SecretStr | None = Field(
        default=None, description="a SQLAlchemy URL of the predictions database"
    )
    webhook_url: SecretStr | None = Field(
        default=None, description="an http(s) incoming-webhook URL"
    )
    webhook_block: str | None = Field(
        default=None, description="the name of a saved WebhookNotification block"
    )
    compiled_models: Path | None = Field(
        default=None, description="a folder for compiled LightGBM models"
    )
    task_results: Path | None = Field(default=None, description="a folder for cached task results")
    request_log_sample: float = Field(
        default=0.1,
        ge=0,
        le=1,
        description="the share of successful requests to log, from 0 (none) to 1 (all), "
        "e.g. 0.1; failed requests are always logged",
    )
    header_timeout_s: Seconds = Field(
        default=10.0, description="seconds above 0 a connection has to send a request head"
    )
    body_timeout_s: Seconds = Field(
        default=30.0, description="seconds above 0 a request has to send its body"
    )
    max_connections: int = Field(
        default=1000, ge=1, description="a whole number above 0 of open connections"
    )
    server_host: str = Field(
        default="127.0.0.1", min_length=1, description="an interface address, e.g. 0.0.0.0"
    )
    server_public_host: str | None = Field(
        default=None, description="the host name clients reach the servers by"
    )
    mlflow_port: int = Field(default=5000, ge=1, le=65535, description="a TCP port, 1 to 65535")
    mlflow_backend_store_uri: SecretStr | None = Field(
        default=None, description="an MLflow backend store URI, e.g. postgresql://..."
    )
    mlflow_artifacts: str | None = Field(
        default=None, description="a folder or URI for the MLflow server's artifacts"
    )
    log_format: Literal["text", "json"] = Field(
        default="text", description="text, or json for one JSON object per log line"
    )


def load_settings() -> ModelferrySettings:
    """The `MODELFERRY_*` settings of this process's environment, checked.

    Raises:
        InvalidConfigError: a variable holds something it cannot; the message names each
            such variable and what it expects, never the value.
    """
    try:
        return ModelferrySettings()
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            # The location is the field's name, or the alias that was set.
            located = str(error["loc"][0]) if error["loc"] else ""
            field = located.lower().removeprefix(ENV_PREFIX.lower())
            info = ModelferrySettings.model_fields.get(field)
            name = located if located.upper().startswith(ENV_PREFIX) else ENV_PREFIX + field.upper()
            wanted = info.description if info is not None and info.description else error["msg"]
            problems.append(f"{name}: set it to {wanted}")
        raise InvalidConfigError(
            "bad modelferry setting in the environment: " + "; ".join(problems)
        ) from None
