"""Who decides, and what the decision records."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from modelferry.approval import ApprovalDecision, evaluate_gate, gate_decision, needs_reviewer
from modelferry.config import GateConfig, MetricGate

PASSED = evaluate_gate({"roc_auc": 0.95}, None, GateConfig())
FAILED = evaluate_gate(
    {"roc_auc": 0.5}, None, GateConfig(metrics={"roc_auc": MetricGate(threshold=0.9)})
)


@pytest.mark.parametrize(
    ("mode", "gate_passed", "asks"),
    [
        ("auto", True, False),
        ("auto", False, False),
        ("manual", True, True),
        ("manual", False, True),
        ("gate+manual", True, True),
        ("gate+manual", False, False),
    ],
)
def test_needs_reviewer(mode: str, gate_passed: bool, asks: bool) -> None:
    assert needs_reviewer(mode, PASSED if gate_passed else FAILED) is asks


def test_gate_decision_follows_gate() -> None:
    approved = gate_decision("auto", PASSED, "run-1")
    assert approved.approved
    assert approved.decided_by == "gate"
    rejected = gate_decision("gate+manual", FAILED, "run-1")
    assert not rejected.approved
    assert rejected.comment == "roc_auc 0.5000 must be at least 0.9"


def test_decision_tags_are_complete() -> None:
    decision = ApprovalDecision(
        status="rejected",
        mode="manual",
        decided_by="alice",
        gate_passed=True,
        comment="drift in input data",
        flow_run_id="abc",
        decided_at=datetime(2026, 11, 22, 2, 0, tzinfo=UTC),
    )
    assert decision.to_tags() == {
        "decision.status": "rejected",
        "decision.mode": "manual",
        "decision.decided_by": "alice",
        "decision.comment": "drift in input data",
        "decision.decided_at": "2026-11-22T02:00:00+00:00",
        "decision.flow_run_id": "abc",
        "decision.gate": "passed",
    }
    assert decision.summary("m", "3") == (
        "m v3 rejected by reviewer alice; the champion is unchanged (drift in input data)"
    )


def test_timeout_summary_says_what_happened() -> None:
    decision = ApprovalDecision("timed_out", "manual", "nobody", True)
    assert "nobody answered the approval request in time" in decision.summary("m", "2")
    assert not decision.approved
