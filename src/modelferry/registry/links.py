"""Where a reviewer can see one MLflow run: a link to a tracking server, or how to open it."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

#: Stores on this machine that `mlflow ui --backend-store-uri` can open as they are.
_LOCAL_SCHEMES = ("sqlite", "file", "")


def run_url(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    """A link to the run in the MLflow UI when MLflow is a server, else how to see the run.

    A `http(s)` tracking URI gives `{server}/#/experiments/{experiment}/runs/{run}`, with
    any user-info (`user:token@`) removed so that no secret reaches a report. A local
    store (`sqlite:`, `file:` or a plain path) gives the `mlflow ui` command that shows it.
    Any other store (a database, Databricks) is named with its credentials masked.
    """
    parts = urlsplit(tracking_uri)
    fragment = f"#/experiments/{experiment_id}/runs/{run_id}"
    if parts.scheme in ("http", "https"):
        base = urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))
        return f"{base.rstrip('/')}/{fragment}"
    if parts.scheme in _LOCAL_SCHEMES or _is_windows_path(parts.scheme):
        return f"mlflow ui --backend-store-uri {tracking_uri} (then open {fragment})"
    where = tracking_uri
    if "@" in parts.netloc:
        netloc = f"***@{parts.netloc.rpartition('@')[2]}"
        where = urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))
    return f"run {run_id} of experiment {experiment_id} in the MLflow store at {where}"


def _is_windows_path(scheme: str) -> bool:
    # `C:\mlruns` parses with the drive letter as its scheme.
    return len(scheme) == 1
