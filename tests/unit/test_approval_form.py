"""The reviewer's form: an explicit approve/reject choice that has no default."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from flows.approval import ApprovalInput


def test_schema_requires_an_explicit_choice_without_default() -> None:
    schema = ApprovalInput.model_json_schema()
    decision = schema["properties"]["decision"]
    # An enum renders as a select in the Prefect UI; required and without a default,
    # the form cannot be submitted until the reviewer picks one.
    assert decision["enum"] == ["approve", "reject"]
    assert "default" not in decision
    assert set(schema["required"]) == {"decision", "reviewer"}
    assert "approve" not in schema["properties"]
    assert schema["additionalProperties"] is False


def test_answer_without_a_choice_is_refused() -> None:
    with pytest.raises(ValidationError, match="decision"):
        ApprovalInput.model_validate({"reviewer": "alice"})
    with pytest.raises(ValidationError, match="decision"):
        ApprovalInput.model_validate({"decision": "maybe", "reviewer": "alice"})


@pytest.mark.parametrize(("decision", "approved"), [("approve", True), ("reject", False)])
def test_choice_decides(decision: str, approved: bool) -> None:
    answer = ApprovalInput.model_validate({"decision": decision, "reviewer": "alice"})
    assert answer.approved is approved
    assert answer.comment == ""
