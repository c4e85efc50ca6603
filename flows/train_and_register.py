"""`train-and-register`: train → evaluate → register → gate → approval.

Run it by hand from the repository root:

    python -m flows.train_and_register --config config/model_config.json --approval manual
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field

from prefect import flow, get_run_logger
from prefect.events import emit_event

from flows.approval import ask_reviewer
from flows.current_run import completed, current_flow_run_id
from flows.inputs import Targets
from flows.notifications import notify_approval_pending, notify_failure
from modelferry.approval import (
    ApprovalDecision,
    evaluate_gate,
    gate_decision,
    needs_reviewer,
)
from modelferry.config import APPROVAL_MODES, DeliveryConfig, load_config, with_approval_mode
from modelferry.errors import ApprovalRejectedError, ApprovalTimedOutError
from modelferry.registry import GATE_CHART_ARTIFACT, lineage_tags
from modelferry.registry.links import artifact_link
from tasks.data import load_data
from tasks.registry import (
    log_gate,
    read_champions,
    record_decision,
    register_challenger,
    score_champion,
)
from tasks.reporting import publish_gate_report
from tasks.training import train

DEFAULT_CONFIG = "config/model_config.json"


@dataclass(frozen=True)
class RegistrationOutcome:
    """What `train-and-register` did: the version it registered and what was decided."""

    model_name: str
    version: str
    run_id: str
    run_url: str
    metrics: dict[str, float]
    gate_passed: bool
    decision: ApprovalDecision
    champion_version: str | None
    previous_champion_version: str | None
    #: The config's delivery section as this run read it: the nightly job delivers by it
    #: instead of reading the config file again.
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)

    @property
    def approved(self) -> bool:
        """True when the new version became the champion."""
        return self.decision.approved

    def summary(self) -> str:
        """The decision in one line."""
        return self.decision.summary(self.model_name, self.version)

    def champion_line(self) -> str:
        """Where `champion` points, for the run's summary.

        E.g. "models:/m@champion -> v2 (unchanged; previous champion: 1)" after a rejection.
        """
        if self.champion_version is None:
            return f"none (v{self.version} was not promoted; {self.model_name} has no champion)"
        state = "" if self.approved else "unchanged; "
        previous = self.previous_champion_version or "none"
        return (
            f"models:/{self.model_name}@champion -> v{self.champion_version} "
            f"({state}previous champion: {previous})"
        )

    def report(self) -> str:
        """Where to look: the MLflow run, the registered version, the decision, the metrics."""
        metrics = ", ".join(f"{k} {v:.4f}" for k, v in sorted(self.metrics.items()))
        return "\n".join(
            [
                f"Decision:          {self.summary()}",
                f"Registered model:  models:/{self.model_name}/{self.version}",
                f"Champion:          {self.champion_line()}",
                f"Test metrics:      {metrics}",
                f"MLflow run:        {self.run_url}",
            ]
        )


@flow(
    name="train-and-register",
    log_prints=True,
    on_failure=[notify_failure],
    on_crashed=[notify_failure],
)
def train_and_register(
    config_path: str = DEFAULT_CONFIG,
    approval: str | None = None,
    targets: Targets = Targets(),  # noqa: B008 (frozen: one shared default is safe)
    approval_poll_seconds: int = 10,
    fail_on_reject: bool = False,
) -> RegistrationOutcome:
    """Train a model from its config, register it and decide whether it becomes champion.

    Args:
        config_path: the model config file (JSON or YAML).
        approval: overrides the config's approval mode: auto, manual or gate+manual.
        targets: where MLflow is (`tracking`, a saved `MlflowTracking` block, or
            `tracking_uri`); default `MLFLOW_TRACKING_URI`, else the embedded SQLite store
            under `.modelferry/`. Its other targets are not used here.
        approval_poll_seconds: how often a paused run checks whether it was resumed.
        fail_on_reject: end the run Failed (not Completed) when the model is rejected,
            for pipelines that must go red.
    """
    logger = get_run_logger()
    config = with_approval_mode(load_config(config_path), approval)
    settings = targets.tracking_settings()
    flow_run_id = current_flow_run_id()
    name = config.registered_model_name

    dataset = load_data(config.data)
    logger.info(
        "Loaded %d rows from %s (digest %s)",
        dataset.row_count,
        dataset.source_uri,
        dataset.digest[:12],
    )
    result = train(dataset, config)
    logged, version = register_challenger(
        settings, config, dataset, result, lineage_tags(flow_run_id)
    )
    logger.info("Registered %s v%s (challenger); MLflow run %s", name, version.version, logged.url)

    champion = score_champion(settings, name, result.split)
    gate = evaluate_gate(
        result.test_metrics, champion.metrics, config.gate, champion.version, champion.note
    )
    title = f"{name} v{version.version}: challenger vs champion"
    log_gate(settings, logged.run_id, gate, title)
    chart = artifact_link(settings.tracking_uri, logged.run_id, GATE_CHART_ARTIFACT)
    report = publish_gate_report(title, name, version.version, gate, logged.url, chart)

    mode = config.approval.mode
    decision: ApprovalDecision
    if needs_reviewer(mode, gate):
        decision = ask_reviewer(
            report,
            mode,
            gate,
            config.approval.timeout_seconds,
            approval_poll_seconds,
            flow_run_id,
            on_paused=lambda: notify_approval_pending(
                flow_run_id,
                name,
                version.version,
                "The gate passed."
                if gate.passed
                else "The gate failed: " + "; ".join(gate.failures),
                f"{config.approval.timeout_seconds} s",
            ),
        )
    else:
        decision = gate_decision(mode, gate, flow_run_id)
    record_decision(settings, version, decision)
    # As the registry has them now: after a rejection the champion and its predecessor
    # are the ones from earlier nights.
    champion_version, previous_champion_version = read_champions(settings, name)
    if decision.approved:
        announce_approval(name, version.version, decision, logged.url)

    outcome = RegistrationOutcome(
        model_name=name,
        version=version.version,
        run_id=logged.run_id,
        run_url=logged.url,
        metrics=result.test_metrics,
        gate_passed=gate.passed,
        decision=decision,
        champion_version=champion_version,
        previous_champion_version=previous_champion_version,
        delivery=config.delivery,
    )
    logger.info(outcome.summary())
    if not decision.approved and fail_on_reject:
        error = ApprovalTimedOutError if decision.status == "timed_out" else ApprovalRejectedError
        raise error(outcome.summary(), model_name=name, model_version=version.version)
    return completed(outcome)


MODEL_APPROVED_EVENT = "modelferry.model.approved"


def announce_approval(
    model_name: str, version: str, decision: ApprovalDecision, run_url: str
) -> None:
    """Emit `modelferry.model.approved`: deployment triggers start the rollout and delivery."""
    emit_event(
        event=MODEL_APPROVED_EVENT,
        resource={
            "prefect.resource.id": f"modelferry.model.{model_name}.{version}",
            "prefect.resource.name": f"{model_name} v{version}",
            "modelferry.model.name": model_name,
            "modelferry.model.version": version,
        },
        payload={
            "model_name": model_name,
            "model_version": version,
            "decided_by": decision.decided_by,
            "mode": decision.mode,
            "comment": decision.comment,
            "mlflow_run_url": run_url,
        },
    )


def main(argv: list[str] | None = None) -> int:
    """Command line: run the flow once, print the outcome."""
    parser = argparse.ArgumentParser(prog="python -m flows.train_and_register")
    parser.add_argument("--config", default=DEFAULT_CONFIG)
    parser.add_argument("--approval", choices=APPROVAL_MODES)
    parser.add_argument("--tracking-uri")
    parser.add_argument("--approval-poll-seconds", type=int, default=10)
    args = parser.parse_args(argv)
    outcome = train_and_register(
        args.config,
        args.approval,
        Targets(tracking_uri=args.tracking_uri),
        args.approval_poll_seconds,
    )
    print(outcome.report())
    return 0


if __name__ == "__main__":
    sys.exit(main())
