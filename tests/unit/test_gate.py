"""The metric gate: thresholds, deltas, direction of each metric, and the report."""

from __future__ import annotations

import pytest

from modelferry.approval import evaluate_gate
from modelferry.config import GateConfig, MetricGate

CHALLENGER = {"roc_auc": 0.95, "accuracy": 0.90, "log_loss": 0.20}


def gate(**metrics: MetricGate) -> GateConfig:
    return GateConfig(metrics=metrics)


def test_no_champion_checks_absolute_thresholds_only() -> None:
    config = gate(roc_auc=MetricGate(threshold=0.9, min_delta=0.05))
    result = evaluate_gate(CHALLENGER, None, config)
    assert result.passed
    failing = evaluate_gate(CHALLENGER, None, gate(roc_auc=MetricGate(threshold=0.96)))
    assert not failing.passed
    assert failing.failures == ["roc_auc 0.9500 must be at least 0.96"]


def test_absolute_improvement_required() -> None:
    config = gate(roc_auc=MetricGate(min_delta=0.01))
    assert evaluate_gate(CHALLENGER, {**CHALLENGER, "roc_auc": 0.93}, config, "3").passed
    result = evaluate_gate(CHALLENGER, {**CHALLENGER, "roc_auc": 0.945}, config, "3")
    assert not result.passed
    assert "improves on the champion by +0.0050" in result.failures[0]


def test_negative_delta_tolerates_small_regression() -> None:
    config = gate(roc_auc=MetricGate(min_delta=-0.01))
    assert evaluate_gate(CHALLENGER, {**CHALLENGER, "roc_auc": 0.955}, config, "1").passed
    assert not evaluate_gate(CHALLENGER, {**CHALLENGER, "roc_auc": 0.97}, config, "1").passed


def test_relative_improvement() -> None:
    config = gate(accuracy=MetricGate(min_delta=None, min_relative_delta=0.02))
    assert evaluate_gate(CHALLENGER, {**CHALLENGER, "accuracy": 0.88}, config, "1").passed
    result = evaluate_gate(CHALLENGER, {**CHALLENGER, "accuracy": 0.89}, config, "1")
    assert not result.passed
    assert "+1.12%" in result.failures[0]


def test_lower_is_better_metric_reads_improvement_downwards() -> None:
    config = gate(log_loss=MetricGate(threshold=0.25, min_delta=0.0))
    better = evaluate_gate(CHALLENGER, {**CHALLENGER, "log_loss": 0.30}, config, "1")
    assert better.passed
    row = next(r for r in better.rows if r.metric == "log_loss")
    assert row.improvement == pytest.approx(0.10)
    worse = evaluate_gate(CHALLENGER, {**CHALLENGER, "log_loss": 0.10}, config, "1")
    assert not worse.passed
    too_high = evaluate_gate({**CHALLENGER, "log_loss": 0.3}, None, config)
    assert too_high.failures == ["log_loss 0.3000 must be at most 0.25"]


def test_every_failing_bar_is_reported() -> None:
    config = gate(
        roc_auc=MetricGate(threshold=0.99, min_delta=0.0),
        accuracy=MetricGate(min_delta=0.0),
    )
    result = evaluate_gate(CHALLENGER, {"roc_auc": 0.96, "accuracy": 0.95, "log_loss": 0.1}, config)

    assert not result.passed
    # Both of roc_auc's bars fail and both are named; each message carries the numbers.
    assert result.failures == [
        "accuracy improves on the champion by -0.0500; the gate needs at least 0",
        "roc_auc 0.9500 must be at least 0.99",
        "roc_auc improves on the champion by -0.0100; the gate needs at least 0",
    ]
    by_metric = {row.metric: row for row in result.rows}
    assert by_metric["roc_auc"].failures == tuple(result.failures[1:])
    assert by_metric["accuracy"].failures == (result.failures[0],)
    # log_loss got worse too, but it is not gated: shown, never a failure.
    assert not by_metric["log_loss"].gated
    assert by_metric["log_loss"].failures == ()
    assert "| log_loss | 0.2000 | 0.1000 | not gated |" in result.to_markdown("t")


def test_markdown_report_has_a_narrow_table_and_details_below() -> None:
    config = gate(roc_auc=MetricGate(threshold=0.9))
    result = evaluate_gate(CHALLENGER, {**CHALLENGER, "roc_auc": 0.94}, config, "7")
    text = result.to_markdown("m v8: challenger vs champion", "http://mlflow/run/1")
    assert "Gate **passed** (against champion v7)." in text
    # Four columns fit the resume dialog; improvement and bars are lines below the table.
    assert "| metric | challenger | champion | gate |" in text
    assert "| roc_auc | 0.9500 | 0.9400 | pass |" in text
    assert "| accuracy | 0.9000 | 0.9000 | not gated |" in text
    assert all(line.count("|") == 5 for line in text.splitlines() if line.startswith("|"))
    assert (
        "- roc_auc (higher is better): improvement +0.0100 on the champion; "
        "needs at least 0.9 and an improvement of at least 0"
    ) in text
    assert "- accuracy (higher is better): improvement 0 on the champion; not gated" in text
    assert text.endswith(
        "MLflow run: [http://mlflow/run/1](http://mlflow/run/1)\n\n"
        "Gate chart: `gate/gate.png` in its artifacts"
    )
    failed = evaluate_gate(CHALLENGER, None, gate(roc_auc=MetricGate(threshold=0.99)), None, "n")
    text = failed.to_markdown("t")
    assert "Gate **FAILED** (against no champion)." in text
    assert "| roc_auc | 0.9500 | none | FAIL |" in text
    assert "- roc_auc 0.9500 must be at least 0.99" in text
    assert "_n_" in text
    assert "MLflow run" not in text


def test_details_name_only_the_bars_that_applied() -> None:
    config = gate(roc_auc=MetricGate(threshold=0.9, min_delta=-0.005), accuracy=MetricGate())
    alone = evaluate_gate(CHALLENGER, None, config).to_markdown("t")
    assert "- roc_auc (higher is better); needs at least 0.9\n" in alone
    assert "- accuracy (higher is better); no bar applies until there is a champion" in alone
    against = evaluate_gate(CHALLENGER, CHALLENGER, config, "1").to_markdown("t")
    assert (
        "- roc_auc (higher is better): improvement 0 on the champion; "
        "needs at least 0.9 and an improvement of at least -0.005"
    ) in against


def test_markdown_report_is_plain_text_without_emoji() -> None:
    config = gate(roc_auc=MetricGate(threshold=0.9), log_loss=MetricGate(min_delta=0.01))
    for champion in (None, {**CHALLENGER, "roc_auc": 0.94}):
        text = evaluate_gate(CHALLENGER, champion, config, "2").to_markdown("t", "http://m/1")
        # Emoji and pictographs start at U+2600; a plain font may show them as boxes.
        assert [char for char in text if ord(char) >= 0x2600] == []


def test_negative_zero_prints_as_zero() -> None:
    # A lower-is-better metric equal to the champion's improves by -(0.0), i.e. -0.0.
    config = gate(log_loss=MetricGate(min_delta=0.01, min_relative_delta=-0.0))
    result = evaluate_gate(
        {"log_loss": 0.2, "r": -0.00001}, {"log_loss": 0.2, "r": 0.0}, config, "1"
    )
    text = result.to_markdown("t")
    assert "-0" not in text
    assert "| r | 0.0000 | 0.0000 | not gated |" in text
    assert "improvement 0 on the champion" in text
    assert "log_loss improves on the champion by 0; the gate needs at least +0.01" in text
    assert "a relative improvement of at least 0%" in text


def test_local_store_command_is_shown_as_code() -> None:
    result = evaluate_gate(CHALLENGER, None, gate(roc_auc=MetricGate()))
    command = "mlflow ui --backend-store-uri sqlite:///tmp/my_runs/mlflow.db (then open #/x)"
    text = result.to_markdown("t", command)
    # As code, Markdown keeps the path's underscores and `sqlite:///` as they are.
    assert f"\nMLflow run: `{command}`\n" in text


def test_a_tracking_server_report_links_to_the_gate_chart() -> None:
    result = evaluate_gate(CHALLENGER, None, gate(roc_auc=MetricGate()))
    chart = "http://mlflow:5000/get-artifact?path=gate%2Fgate.png&run_uuid=r1"

    text = result.to_markdown("t", "http://mlflow:5000/#/experiments/1/runs/r1", chart)

    assert text.endswith(f"Gate chart: [gate/gate.png]({chart})")


@pytest.mark.parametrize(
    ("metric", "config", "champion", "required"),
    [
        # The tightest bar wins: the threshold, or the champion plus the improvement asked.
        ("roc_auc", MetricGate(threshold=0.9, min_delta=0.01), 0.93, 0.94),
        ("roc_auc", MetricGate(threshold=0.97, min_delta=0.01), 0.93, 0.97),
        ("roc_auc", MetricGate(min_delta=None, min_relative_delta=0.1), 0.5, 0.55),
        ("roc_auc", MetricGate(min_delta=-0.005), 0.93, 0.925),
        # Lower is better: "at most", and an improvement takes the value down.
        ("log_loss", MetricGate(threshold=0.3, min_delta=0.01), 0.2, 0.19),
        ("log_loss", MetricGate(threshold=0.15, min_delta=0.01), 0.2, 0.15),
        ("log_loss", MetricGate(min_delta=None, min_relative_delta=0.5), 0.2, 0.1),
        # Without a champion only the threshold applies; without any bar nothing is asked.
        ("roc_auc", MetricGate(threshold=0.9, min_delta=0.01), None, 0.9),
        ("roc_auc", MetricGate(), None, None),
        ("roc_auc", MetricGate(threshold=0.9), float("nan"), 0.9),
    ],
)
def test_required_is_the_value_the_bars_come_to(
    metric: str, config: MetricGate, champion: float | None, required: float | None
) -> None:
    champion_metrics = None if champion is None else {**CHALLENGER, metric: champion}
    result = evaluate_gate(CHALLENGER, champion_metrics, gate(**{metric: config}), "1")

    row = next(row for row in result.rows if row.metric == metric)
    assert row.required == (None if required is None else pytest.approx(required))
    assert result.to_table()["required"][result.rows.index(row)] == row.required
    # The challenger passes exactly when it reaches the required value.
    if required is not None and champion is not None and champion == champion:
        reaches = row.challenger >= required if row.higher_is_better else row.challenger <= required
        assert row.passed is reaches


def test_gated_metric_missing_from_challenger_is_an_error() -> None:
    with pytest.raises(ValueError, match="were not computed"):
        evaluate_gate({"accuracy": 0.9}, None, gate(roc_auc=MetricGate()))


def test_the_table_for_mlflow_has_one_row_per_metric_and_the_verdicts() -> None:
    config = gate(roc_auc=MetricGate(min_delta=0.01), log_loss=MetricGate(threshold=0.1))
    result = evaluate_gate(CHALLENGER, {**CHALLENGER, "roc_auc": 0.945}, config, "3")

    table = result.to_table()

    assert {len(column) for column in table.values()} == {len(result.rows)}
    rows = {m: {k: v[i] for k, v in table.items()} for i, m in enumerate(table["metric"])}
    assert rows["roc_auc"]["challenger"] == 0.95
    assert rows["roc_auc"]["champion"] == 0.945
    assert rows["roc_auc"]["improvement"] == pytest.approx(0.005)
    assert rows["roc_auc"]["passed"] is False
    assert "improves on the champion by +0.0050" in str(rows["roc_auc"]["failures"])
    assert rows["log_loss"]["higher_is_better"] is False
    assert rows["log_loss"]["passed"] is False
    assert rows["log_loss"]["gated"] is True


@pytest.mark.parametrize(
    "config",
    [
        MetricGate(min_delta=0.0),
        MetricGate(min_delta=None, min_relative_delta=0.01),
        MetricGate(threshold=0.9),
    ],
)
def test_a_challenger_metric_that_could_not_be_measured_fails_the_gate(config: MetricGate) -> None:
    # roc_auc of a test set that holds one class only is NaN, and NaN compares False.
    challenger = {**CHALLENGER, "roc_auc": float("nan")}

    with_champion = evaluate_gate(challenger, CHALLENGER, gate(roc_auc=config), "1")
    without = evaluate_gate(challenger, None, gate(roc_auc=config))

    for result in (with_champion, without):
        assert not result.passed
        assert result.failures == [
            "roc_auc is nan for the challenger: it could not be measured on this test set "
            "(does it hold both classes?), so the gate cannot pass it"
        ]


def test_a_champion_metric_that_could_not_be_measured_fails_the_improvement_bar() -> None:
    champion = {**CHALLENGER, "roc_auc": float("nan")}

    result = evaluate_gate(CHALLENGER, champion, gate(roc_auc=MetricGate(min_delta=-0.01)), "1")
    threshold_only = evaluate_gate(
        CHALLENGER, champion, gate(roc_auc=MetricGate(threshold=0.9, min_delta=None)), "1"
    )

    assert not result.passed
    assert result.failures == [
        "roc_auc is nan for the champion, so no improvement on it can be measured; "
        "the gate cannot pass the challenger"
    ]
    assert threshold_only.passed
