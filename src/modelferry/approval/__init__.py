"""The approval gate: metric comparison against the champion, and the recorded decision."""

from modelferry.approval.decision import (
    GATE,
    ApprovalDecision,
    DecisionStatus,
    gate_decision,
    needs_reviewer,
)
from modelferry.approval.gate import GateResult, MetricComparison, evaluate_gate

__all__ = [
    "GATE",
    "ApprovalDecision",
    "DecisionStatus",
    "GateResult",
    "MetricComparison",
    "evaluate_gate",
    "gate_decision",
    "needs_reviewer",
]
