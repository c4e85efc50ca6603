"""What the nightly run tells people: the rollout's steps, the champion, runnable commands."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from flows.deploy_online_endpoint import RolloutOutcome
from flows.retrain_and_deliver import NightlyOutcome
from flows.train_and_register import RegistrationOutcome
from modelferry.approval import ApprovalDecision

MODEL = "breast-cancer-classifier"


def registration(
    approved: bool, version: str, champion: str | None, previous: str | None
) -> RegistrationOutcome:
    decision = ApprovalDecision(
        "approved" if approved else "rejected", "auto", "gate", gate_passed=approved
    )
    return RegistrationOutcome(
        MODEL, version, "run", "http://mlflow/run", {"roc_auc": 0.99}, approved, decision,
        champion, previous,
    )  # fmt: skip


def first_rollout() -> RolloutOutcome:
    return RolloutOutcome(
        MODEL, "http://127.0.0.1:5001/score", "blue", MODEL, "1", {"blue": 100},
        ("first deployment, 100 %: 45 requests, 0 errors, p99 3.1 ms — passed",),
        first_deployment=True,
    )  # fmt: skip


def canary_rollout() -> RolloutOutcome:
    steps = (
        "10 %: 41 requests, 0 errors, p99 3.0 ms — passed",
        "50 %: not judged (12 < 20 requests)",
        "100 %: 44 requests, 0 errors, p99 2.9 ms — passed",
    )
    return RolloutOutcome(
        MODEL, "http://127.0.0.1:5001/score", "green", MODEL, "2", {"blue": 0, "green": 100},
        steps, chart=f"rollouts/{MODEL}-20261207T020000Z.png",
    )  # fmt: skip


def test_a_first_deployment_says_so_and_lists_its_one_step() -> None:
    report = NightlyOutcome(registration(True, "1", "1", None), first_rollout()).report()
    assert "(blue 100%, first deployment)" in report
    assert "  first deployment, 100 %: 45 requests, 0 errors, p99 3.1 ms — passed" in report
    assert "10 %" not in report
    assert "first deployment; blue" in first_rollout().summary()


def test_each_canary_step_is_listed_with_its_verdict() -> None:
    rollout = canary_rollout()
    lines = NightlyOutcome(registration(True, "2", "2", "1"), rollout).report().splitlines()
    start = lines.index("Online endpoint:   http://127.0.0.1:5001/score (blue 0%, green 100%)")
    assert lines[start + 1 : start + 4] == [f"  {step}" for step in rollout.steps]
    assert "50 %: not judged (12 < 20 requests)" in rollout.summary()
    assert "first deployment" not in rollout.summary()


def test_the_rollout_chart_is_named_after_the_steps_when_it_was_drawn() -> None:
    lines = (
        NightlyOutcome(registration(True, "2", "2", "1"), canary_rollout()).report().splitlines()
    )
    after_steps = lines.index("  100 %: 44 requests, 0 errors, p99 2.9 ms — passed") + 1
    assert lines[after_steps] == (
        f"Rollout chart:     rollouts/{MODEL}-20261207T020000Z.png in the MLflow run of v2"
    )
    first = NightlyOutcome(registration(True, "1", "1", None), first_rollout()).report()
    assert "Rollout chart" not in first


def test_commands_are_runnable_from_here_when_modelferry_is_not_on_path(
    unactivated_venv: Path,
) -> None:
    (unactivated_venv / "modelferry").write_text("#!/bin/sh\n", encoding="utf-8")

    report = NightlyOutcome(registration(True, "1", "1", None), first_rollout()).report()

    assert f"Try it:            .venv/bin/modelferry endpoints show {MODEL}" in report
    assert f"Scoring key:       .venv/bin/modelferry endpoints key {MODEL}" in report
    lines = report.splitlines()
    assert lines.index(next(x for x in lines if x.startswith("Scoring key:"))) > lines.index(
        next(x for x in lines if x.startswith("Online endpoint:"))
    )


def test_commands_use_modelferry_when_it_is_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/local/bin/{name}")
    report = NightlyOutcome(registration(True, "1", "1", None), first_rollout()).report()
    assert f"Try it:            modelferry endpoints show {MODEL}" in report
    assert f"Scoring key:       modelferry endpoints key {MODEL}" in report


def test_a_rejection_names_the_unchanged_champion_and_its_predecessor() -> None:
    report = registration(False, "3", "2", "1").report()
    assert (
        f"Champion:          models:/{MODEL}@champion -> v2 (unchanged; previous champion: 1)"
        in report
    )
    approved = registration(True, "2", "2", "1").report()
    assert f"models:/{MODEL}@champion -> v2 (previous champion: 1)" in approved
    nobody = registration(False, "1", None, None).report()
    assert "Champion:          none (v1 was not promoted" in nobody
