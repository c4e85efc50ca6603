"""Registered model versions: register, tag, alias, load, promote."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from modelferry.errors import RegistryError
from modelferry.registry.tracking import TrackingSettings, tracking_errors

CHALLENGER = "challenger"
CHAMPION = "champion"
PREVIOUS_CHAMPION = "previous-champion"

#: Version tag holding the class names as a JSON list (position = label value).
CLASS_NAMES_TAG = "modelferry.class_names"

# Flavors loaded natively, in order of preference: a LightGBM sklearn-API model carries
# both, and its booster is the fast path.
_NATIVE_FLAVORS = ("lightgbm", "sklearn")


@dataclass(frozen=True)
class RegisteredVersion:
    """One version of a registered model, with its tags and aliases."""

    name: str
    version: str
    run_id: str | None
    source: str
    tags: dict[str, str]
    aliases: tuple[str, ...]

    @property
    def uri(self) -> str:
        """`models:/NAME/VERSION`, loadable by any MLflow client."""
        return f"models:/{self.name}/{self.version}"


class ModelRegistry:
    """The versions of registered models in one MLflow registry.

    Every method raises `TrackingUnavailableError` when MLflow cannot be reached (worth a
    retry) and `RegistryError` when it refuses the operation.
    """

    def __init__(self, settings: TrackingSettings) -> None:
        """Bind to the registry `settings` names; no connection is made yet."""
        from mlflow import MlflowClient

        self.settings = settings
        settings.activate()
        self._client = MlflowClient(settings.tracking_uri, settings.registry_uri)

    def register(
        self,
        name: str,
        model_uri: str,
        run_id: str,
        tags: dict[str, str],
        model_id: str | None = None,
    ) -> RegisteredVersion:
        """Register `model_uri` as a new version of `name` (created if missing), tagged.

        `model_id` names the logged model behind a `models:/m-...` URI; tracking servers
        refuse such a source without it.
        """
        with tracking_errors(self.settings, f"registering a version of {name!r}"):
            try:
                self._client.get_registered_model(name)
            except Exception as exc:
                if "RESOURCE_DOES_NOT_EXIST" not in str(exc) and "not found" not in str(exc):
                    raise
                self._client.create_registered_model(name, description="Registered by modelferry.")
            mv = self._client.create_model_version(
                name, model_uri, run_id=run_id, tags=tags, model_id=model_id
            )
            return self.get(name, str(mv.version))

    def get(self, name: str, version: str) -> RegisteredVersion:
        """One version by number."""
        with tracking_errors(self.settings, f"reading {name!r} version {version}"):
            return _to_version(self._client.get_model_version(name, version))

    def experiment_of(self, run_id: str) -> str:
        """The id of the experiment run `run_id` belongs to (for a link to the run)."""
        with tracking_errors(self.settings, f"reading run {run_id}"):
            return str(self._client.get_run(run_id).info.experiment_id)

    def get_by_alias(self, name: str, alias: str) -> RegisteredVersion | None:
        """The version `alias` points at, or None when the alias (or model) does not exist."""
        with tracking_errors(self.settings, f"reading {name!r}@{alias}"):
            try:
                mv = self._client.get_model_version_by_alias(name, alias)
            except Exception as exc:
                text = str(exc)
                if "RESOURCE_DOES_NOT_EXIST" in text or "not found" in text.lower():
                    return None
                raise
            return _to_version(mv)

    def list_versions(self, name: str) -> list[RegisteredVersion]:
        """Every version of `name`, oldest first; empty when the model does not exist."""
        with tracking_errors(self.settings, f"listing versions of {name!r}"):
            found = self._client.search_model_versions(f"name = '{name}'")
            return sorted((_to_version(mv) for mv in found), key=lambda v: int(v.version))

    def set_tags(self, name: str, version: str, tags: dict[str, str]) -> None:
        """Set (or overwrite) tags on one version."""
        with tracking_errors(self.settings, f"tagging {name!r} version {version}"):
            for key, value in tags.items():
                self._client.set_model_version_tag(name, version, key, value)

    def set_alias(self, name: str, alias: str, version: str) -> None:
        """Point `alias` at `version` (moving it if it pointed elsewhere)."""
        with tracking_errors(self.settings, f"setting {name!r}@{alias}"):
            self._client.set_registered_model_alias(name, alias, version)

    def promote(self, name: str, version: str) -> RegisteredVersion | None:
        """Make `version` the champion; the old champion becomes `previous-champion`.

        Returns:
            The version that was champion before, or None if there was none.
        """
        previous = self.get_by_alias(name, CHAMPION)
        if previous is not None and previous.version != version:
            self.set_alias(name, PREVIOUS_CHAMPION, previous.version)
        self.set_alias(name, CHAMPION, version)
        return previous

    def flavors(self, version: RegisteredVersion) -> dict[str, Any]:
        """The flavors in a version's `MLmodel` file: what is stored, whatever its tags say."""
        from mlflow.models import get_model_info

        with tracking_errors(self.settings, f"reading the MLmodel of {version.uri}"):
            self.settings.activate()
            return dict(get_model_info(version.uri).flavors or {})

    def load_classifier(self, version: RegisteredVersion) -> Any:
        """The model of a version, loaded by its native flavor.

        The flavor comes from the `MLmodel` file, not from the `modelferry.flavor` tag, so
        versions logged by plain MLflow load too. LightGBM models logged from the native
        API load as a `lightgbm.Booster` (no `predict_proba`); scikit-learn ones as the
        estimator.

        Raises:
            RegistryError: the version has neither a lightgbm nor a sklearn flavor.
        """
        import mlflow

        flavors = self.flavors(version)
        flavor = native_flavor(flavors)
        if flavor is None:
            found = ", ".join(sorted(flavors)) or "none"
            raise RegistryError(
                f"{version.uri} has flavors {found}; loading it natively needs a lightgbm "
                "or sklearn flavor. Load it with mlflow.pyfunc, or log it with "
                "mlflow.lightgbm or mlflow.sklearn.",
                model_name=version.name,
                model_version=version.version,
            )
        with tracking_errors(self.settings, f"loading {version.uri}"):
            self.settings.activate()
            if flavor == "lightgbm":
                return mlflow.lightgbm.load_model(version.uri)
            return mlflow.sklearn.load_model(version.uri)

    def load_pyfunc(self, version: RegisteredVersion) -> Any:
        """A version as MLflow's generic `PyFuncModel`, for flavors with no native loader."""
        import mlflow.pyfunc

        with tracking_errors(self.settings, f"loading {version.uri} as python_function"):
            self.settings.activate()
            return mlflow.pyfunc.load_model(version.uri)


def native_flavor(flavors: dict[str, Any]) -> str | None:
    """`lightgbm` or `sklearn` when `flavors` has one (LightGBM first), else None."""
    return next((f for f in _NATIVE_FLAVORS if f in flavors), None)


def _to_version(mv: Any) -> RegisteredVersion:
    return RegisteredVersion(
        name=mv.name,
        version=str(mv.version),
        run_id=mv.run_id,
        source=mv.source,
        tags=dict(mv.tags or {}),
        aliases=tuple(getattr(mv, "aliases", ()) or ()),
    )
