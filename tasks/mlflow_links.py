"""Link artifacts from a flow run to the MLflow run and the registered model version."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from modelferry.errors import ModelferryError
from modelferry.registry import ModelRegistry, TrackingSettings
from modelferry.registry.links import model_version_link, model_version_url, run_link, run_url
from tasks.progress import artifact_key


@task(name="publish-mlflow-links", cache_policy=NO_CACHE, timeout_seconds=300)
def publish_mlflow_links(
    settings: TrackingSettings, model_name: str, model_version: str, key_prefix: str
) -> list[str]:
    """Link this flow run to the version's MLflow run and its model version page.

    On a `http(s)` tracking server: two link artifacts, `<prefix>-mlflow-run` and
    `<prefix>-model-version`, without credentials. A local or database store has no page
    to link to: one markdown artifact, `<prefix>-mlflow`, says how to open both (the
    `mlflow ui` command), so no artifact holds a link that leads nowhere. MLflow being
    away, or a version without a run, leaves the run's link out with a warning: links
    never fail the work they describe.

    Returns:
        The keys of the artifacts created.
    """
    logger = get_run_logger()
    uri = settings.tracking_uri
    prefix = artifact_key(key_prefix)
    where = f"{model_name} v{model_version}"
    store = uri.removeprefix("sqlite:///")
    if store != uri and not Path(store).is_file():
        # A SQLite store that does not exist holds no version: opening it would create it.
        logger.warning("No MLflow links for %s: no MLflow store at %s", where, store)
        return []
    run: tuple[str, str] | None = None
    try:
        registry = ModelRegistry(settings)
        run_id = registry.get(model_name, model_version).run_id
        if run_id is None:
            logger.warning("No link to the MLflow run of %s: it has no run", where)
        else:
            run = (registry.experiment_of(run_id), run_id)
    except ModelferryError as exc:
        logger.warning("No MLflow links for %s: %s", where, exc)
        return []
    version_page = model_version_link(uri, model_name, model_version)
    if version_page is None:
        lines = [
            f"# MLflow: {where}",
            "",
            f"- Model version: `{model_version_url(uri, model_name, model_version)}`",
        ]
        if run is not None:
            lines.append(f"- Run `{run[1]}`: `{run_url(uri, *run)}`")
        key = f"{prefix}-mlflow"
        create_markdown_artifact(
            markdown="\n".join(lines),
            key=key,
            description=f"Where to see {where} and its MLflow run (the store has no web address)",
        )
        return [key]
    keys = []
    if run is not None and (page := run_link(uri, *run)) is not None:
        keys.append(f"{prefix}-mlflow-run")
        create_link_artifact(
            link=page,
            link_text=f"MLflow run {run[1]} of {where}",
            key=keys[-1],
            description=f"The MLflow run that trained {where}",
        )
    keys.append(f"{prefix}-model-version")
    create_link_artifact(
        link=version_page,
        link_text=f"{where} in the MLflow model registry",
        key=keys[-1],
        description=f"The registered model version {where}",
    )
    return keys
