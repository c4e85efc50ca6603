"""Reports published to the Prefect UI."""

from __future__ import annotations

import re

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from modelferry.approval import GateResult


@task(name="publish-gate-report", cache_policy=NO_CACHE)
def publish_gate_report(
    title: str,
    model_name: str,
    version: str,
    gate: GateResult,
    run_link: str,
    chart_link: str | None,
) -> str:
    """Publish the challenger-vs-champion table as a markdown artifact; returns the markdown.

    `chart_link` is the gate chart's address on a tracking server (None for a local store,
    where the report names the chart in the run's artifacts instead).
    """
    markdown = gate.to_markdown(title, run_link, chart_link)
    # Artifact keys allow lowercase letters, digits and dashes only.
    key = re.sub(r"[^a-z0-9-]+", "-", f"gate-{model_name.lower()}").strip("-")
    create_markdown_artifact(
        markdown=markdown,
        key=key,
        description=f"Metric gate for {model_name} v{version}",
    )
    return markdown
