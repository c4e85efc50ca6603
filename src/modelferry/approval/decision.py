"""The approval decision: who decided what, when and why — stored as version tags."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from modelferry.approval.gate import GateResult

DecisionStatus = Literal["approved", "rejected", "timed_out"]

#: `decided_by` when no human was asked.
GATE = "gate"


@dataclass(frozen=True)
class ApprovalDecision:
    """The outcome of the approval step for one model version."""

    status: DecisionStatus
    mode: str
    decided_by: str
    gate_passed: bool
    comment: str = ""
    flow_run_id: str | None = None
    decided_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def approved(self) -> bool:
        """True when the challenger may become champion."""
        return self.status == "approved"

    def to_tags(self) -> dict[str, str]:
        """The decision as model-version tags (`decision.*`)."""
        return {
            "decision.status": self.status,
            "decision.mode": self.mode,
            "decision.decided_by": self.decided_by,
            "decision.comment": self.comment,
            "decision.decided_at": self.decided_at.isoformat(timespec="seconds"),
            "decision.flow_run_id": self.flow_run_id or "",
            "decision.gate": "passed" if self.gate_passed else "failed",
        }

    def summary(self, model_name: str, version: str) -> str:
        """One line for logs and the flow run's final state message."""
        who = "the gate" if self.decided_by == GATE else f"reviewer {self.decided_by}"
        if self.status == "approved":
            text = f"{model_name} v{version} approved by {who}; it is now the champion"
        elif self.status == "timed_out":
            text = (
                f"{model_name} v{version} rejected: nobody answered the approval request in "
                "time; the champion is unchanged"
            )
        else:
            text = f"{model_name} v{version} rejected by {who}; the champion is unchanged"
        return f"{text} ({self.comment})" if self.comment else text


def needs_reviewer(mode: str, gate: GateResult) -> bool:
    """Whether a human must be asked: always in `manual`, after a passed gate in `gate+manual`."""
    return mode == "manual" or (mode == "gate+manual" and gate.passed)


def gate_decision(mode: str, gate: GateResult, flow_run_id: str | None) -> ApprovalDecision:
    """The decision when no human is asked: the gate's verdict stands."""
    comment = "; ".join(gate.failures) if not gate.passed else "metric gate passed"
    return ApprovalDecision(
        status="approved" if gate.passed else "rejected",
        mode=mode,
        decided_by=GATE,
        gate_passed=gate.passed,
        comment=comment,
        flow_run_id=flow_run_id,
    )
