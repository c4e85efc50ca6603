"""Where MLflow lives, and turning its failures into errors a user can act on."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import SecretStr

from modelferry.errors import RegistryError, TrackingUnavailableError
from modelferry.registry.links import run_url

#: The embedded default: everything under this folder of the working directory.
DEFAULT_HOME = Path(".modelferry")

# Substrings MLflow and requests put in errors when the server could not be reached or
# answered with a temporary failure; those are worth a retry, everything else is not.
_TRANSIENT_MARKERS = (
    "failed with exception",
    "Max retries exceeded",
    "Connection refused",
    "ConnectionError",
    "ConnectTimeout",
    "ReadTimeout",
    "Read timed out",
    "TEMPORARILY_UNAVAILABLE",
    "REQUEST_LIMIT_EXCEEDED",
    "status code 502",
    "status code 503",
    "status code 504",
    "database is locked",
)


@dataclass(frozen=True)
class TrackingSettings:
    """Where runs and registered models are stored.

    Attributes:
        tracking_uri: any MLflow tracking URI (`sqlite:///...`, `http://host:5000`, ...).
        registry_uri: the model registry, when it is not the tracking store.
        artifact_location: where new experiments keep artifacts; None lets MLflow choose.
        username: HTTP basic-auth user of a tracking server.
        password: HTTP basic-auth password; never shown in a repr, log or message.
        token: bearer token of a tracking server; never shown either.
    """

    tracking_uri: str
    registry_uri: str | None = None
    artifact_location: str | None = None
    username: str | None = None
    password: SecretStr | None = field(default=None, repr=False)
    token: SecretStr | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        # A tracking URI may embed credentials (https://user:token@host): mask them.
        return (
            f"TrackingSettings(tracking_uri={display_uri(self.tracking_uri)!r}, "
            f"registry_uri={display_uri(self.registry_uri or '')!r}, "
            f"username={self.username!r})"
        )

    def activate(self) -> None:
        """Point this process's MLflow at these settings, credentials included.

        MLflow reads server credentials from its environment variables only, so that is
        where they go. Settings without credentials leave variables the user set alone.
        """
        import mlflow

        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.registry_uri or self.tracking_uri)
        values = {
            "MLFLOW_TRACKING_USERNAME": self.username,
            "MLFLOW_TRACKING_PASSWORD": self.password.get_secret_value() if self.password else None,
            "MLFLOW_TRACKING_TOKEN": self.token.get_secret_value() if self.token else None,
        }
        for name, value in values.items():
            if value:
                os.environ[name] = value

    @classmethod
    def embedded(cls, home: Path = DEFAULT_HOME) -> TrackingSettings:
        """MLflow on SQLite with artifacts beside it, under `home` (created if missing)."""
        home = home.resolve()
        home.mkdir(parents=True, exist_ok=True)
        return cls(
            tracking_uri=f"sqlite:///{home / 'mlflow.db'}",
            artifact_location=(home / "mlartifacts").as_uri(),
        )

    @classmethod
    def resolve(cls, tracking_uri: str | None, home: Path = DEFAULT_HOME) -> TrackingSettings:
        """Settings for `tracking_uri`, else `MLFLOW_TRACKING_URI`, else the embedded store.

        A `sqlite:` store keeps its artifacts beside the database file, so that the two
        travel together.
        """
        tracking_uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        if not tracking_uri:
            return cls.embedded(home)
        if tracking_uri.startswith("sqlite:///"):
            db = Path(tracking_uri.removeprefix("sqlite:///"))
            db.parent.mkdir(parents=True, exist_ok=True)
            return cls(tracking_uri, artifact_location=(db.parent / "mlartifacts").as_uri())
        return cls(tracking_uri)

    def run_url(self, experiment_id: str, run_id: str) -> str:
        """A link to the run in the MLflow UI, or a command that shows it for a local store.

        See `modelferry.registry.links.run_url`.
        """
        return run_url(self.tracking_uri, experiment_id, run_id)


def is_transient(exc: BaseException) -> bool:
    """True for failures that a later retry may get past: the server unreachable or busy."""
    if isinstance(exc, TrackingUnavailableError):
        return True
    if isinstance(exc, ConnectionError | TimeoutError):
        return True
    text = f"{type(exc).__name__}: {exc}"
    return any(marker in text for marker in _TRANSIENT_MARKERS)


@contextmanager
def tracking_errors(settings: TrackingSettings, doing: str) -> Iterator[None]:
    """Re-raise MLflow failures as `TrackingUnavailableError` or `RegistryError`.

    Args:
        settings: where MLflow is, named in the message.
        doing: what was being done, e.g. "registering model 'churn'".
    """
    try:
        yield
    except (RegistryError, TrackingUnavailableError):
        raise
    except Exception as exc:
        where = display_uri(settings.tracking_uri)
        if is_transient(exc):
            raise TrackingUnavailableError(
                f"MLflow at {where} did not answer while {doing}: {_first_line(exc)}. "
                "Check the tracking server is running and reachable; the step is retried.",
                tracking_uri=where,
            ) from exc
        raise RegistryError(f"MLflow at {where} refused {doing}: {_first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def display_uri(uri: str) -> str:
    """`uri` with any credentials it embeds (https://user:token@host) masked."""
    if "@" in uri and "://" in uri:
        scheme, rest = uri.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return uri
