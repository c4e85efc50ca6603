"""Where a reviewer can see one MLflow run: a link to a tracking server, or how to open it."""

from __future__ import annotations

from urllib.parse import quote, urlencode, urlsplit, urlunsplit

from modelferry.console_commands import console_command
from modelferry.data.masking import mask_url

#: Stores on this machine that `mlflow ui --backend-store-uri` can open as they are.
_LOCAL_SCHEMES = ("sqlite", "file", "")


def run_url(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    """A link to the run in the MLflow UI when MLflow is a server, else how to see the run.

    A `http(s)` tracking URI gives `{server}/#/experiments/{experiment}/runs/{run}`, with
    any user-info (`user:token@`) removed so that no secret reaches a report. A local
    store (`sqlite:`, `file:` or a plain path) gives the `mlflow ui` command that shows it,
    as the reader can run it from the current folder.
    Any other store (a database, Databricks) is named with its credentials masked, in its
    user-info and in a password query parameter.
    """
    parts = urlsplit(tracking_uri)
    fragment = f"#/experiments/{experiment_id}/runs/{run_id}"
    if parts.scheme in ("http", "https"):
        server = urlsplit(_without_userinfo(tracking_uri))
        base = urlunsplit((server.scheme, server.netloc, server.path, "", ""))
        return f"{base.rstrip('/')}/{fragment}"
    if parts.scheme in _LOCAL_SCHEMES or _is_windows_path(parts.scheme):
        mlflow = console_command("mlflow", "mlflow")
        return f"{mlflow} ui --backend-store-uri {tracking_uri} (then open {fragment})"
    where = _without_userinfo(tracking_uri, mask="***@")
    # mask_url also masks a password given as a query parameter (`?password=...`).
    return f"run {run_id} of experiment {experiment_id} in the MLflow store at {mask_url(where)}"


def artifact_link(tracking_uri: str, run_id: str, artifact_path: str) -> str | None:
    """The address of one artifact of a run on an MLflow tracking server, else None.

    A `http(s)` tracking URI gives `{server}/get-artifact?path=...&run_uuid=...` (what the
    MLflow UI itself fetches), without user-info. A local or database store has no address:
    the artifact is seen in the run's Artifacts tab of `mlflow ui`.
    """
    if urlsplit(tracking_uri).scheme not in ("http", "https"):
        return None
    server = urlsplit(_without_userinfo(tracking_uri))
    base = urlunsplit((server.scheme, server.netloc, server.path, "", "")).rstrip("/")
    return f"{base}/get-artifact?{urlencode({'path': artifact_path, 'run_uuid': run_id})}"


def run_link(tracking_uri: str, experiment_id: str, run_id: str) -> str | None:
    """The run's page in the MLflow UI when MLflow is a `http(s)` server, else None.

    The address `run_url` gives for a server; a local or database store has no page to
    link to (`run_url` says how to open it instead).
    """
    if urlsplit(tracking_uri).scheme not in ("http", "https"):
        return None
    return run_url(tracking_uri, experiment_id, run_id)


def model_version_url(tracking_uri: str, model_name: str, version: str) -> str:
    """Where a registered model version is seen: its MLflow UI page, or how to open it.

    A `http(s)` tracking URI gives `{server}/#/models/{name}/versions/{version}` without
    user-info; a local store gives the `mlflow ui` command and the page to open in it;
    any other store is named with its credentials masked.
    """
    fragment = f"#/models/{quote(model_name, safe='')}/versions/{quote(version, safe='')}"
    parts = urlsplit(tracking_uri)
    if parts.scheme in ("http", "https"):
        return f"{_server_base(tracking_uri)}/{fragment}"
    if parts.scheme in _LOCAL_SCHEMES or _is_windows_path(parts.scheme):
        mlflow = console_command("mlflow", "mlflow")
        return f"{mlflow} ui --backend-store-uri {tracking_uri} (then open {fragment})"
    where = mask_url(_without_userinfo(tracking_uri, mask="***@"))
    return f"{model_name} version {version} in the MLflow registry at {where}"


def model_version_link(tracking_uri: str, model_name: str, version: str) -> str | None:
    """The version's page in the MLflow UI when MLflow is a `http(s)` server, else None."""
    if urlsplit(tracking_uri).scheme not in ("http", "https"):
        return None
    return model_version_url(tracking_uri, model_name, version)


def _server_base(tracking_uri: str) -> str:
    """The server's address without user-info, query or fragment, and no trailing "/"."""
    server = urlsplit(_without_userinfo(tracking_uri))
    return urlunsplit((server.scheme, server.netloc, server.path, "", "")).rstrip("/")


def _without_userinfo(uri: str, mask: str = "") -> str:
    """`uri` with its user-info (`user:password@`) replaced by `mask`.

    Cut at the last "@" rather than parsed: a password written unescaped may hold "/",
    "?" or "#", which a URL parser takes for the end of the host and leaves in place.
    """
    scheme, separator, rest = uri.partition("://")
    if not separator or "@" not in rest:
        return uri
    return f"{scheme}://{mask}{rest.rpartition('@')[2]}"


def _is_windows_path(scheme: str) -> bool:
    # `C:\mlruns` parses with the drive letter as its scheme.
    return len(scheme) == 1
