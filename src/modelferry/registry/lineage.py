"""Where a model came from: source commit, CI build and orchestrator run."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def git_commit(cwd: Path | None = None) -> str | None:
    """The commit being built: Azure DevOps' `BUILD_SOURCEVERSION`, else `git rev-parse`."""
    from_ci = os.environ.get("BUILD_SOURCEVERSION")
    if from_ci:
        return from_ci
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    commit = result.stdout.strip()
    return commit if result.returncode == 0 and commit else None


def lineage_tags(flow_run_id: str | None) -> dict[str, str]:
    """Tags that tie a run and a model version to its commit, CI build and flow run."""
    tags: dict[str, str] = {}
    commit = git_commit()
    if commit:
        tags["git.commit"] = commit
    build_id = os.environ.get("BUILD_BUILDID")
    if build_id:
        tags["ci.build_id"] = build_id
    if flow_run_id:
        tags["prefect.flow_run_id"] = flow_run_id
    return tags
