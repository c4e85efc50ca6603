"""The gate chart: a PNG with a row per metric, coloured by each metric's verdict."""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import pytest
from PIL import Image

from modelferry.approval import evaluate_gate
from modelferry.approval.gate_chart import save_gate_chart
from modelferry.config import GateConfig, MetricGate
from modelferry.pictures import FAILED, PASSED, UNJUDGED, draw_picture
from tests.pictures import pixels_of

CHALLENGER = {"roc_auc": 0.9921, "accuracy": 0.9561, "log_loss": 0.1243}
CHAMPION = {"roc_auc": 0.9900, "accuracy": 0.9649, "log_loss": 0.1100}


def chart(tmp_path: Path, config: GateConfig, champion: dict[str, float] | None) -> Path:
    gate = evaluate_gate(CHALLENGER, champion, config, "1" if champion else None)
    return save_gate_chart(gate, "m v2: challenger vs champion", tmp_path / "gate.png")


def test_a_failing_metric_is_drawn_red_and_a_passing_one_green(tmp_path: Path) -> None:
    config = GateConfig(metrics={"roc_auc": MetricGate(), "accuracy": MetricGate()})

    path = chart(tmp_path, config, CHAMPION)

    with Image.open(path) as image:
        assert image.format == "PNG"
        # 7 inches wide at 100 dpi; a row per metric (three) makes it taller than wide.
        assert image.size[0] == 700
        assert image.size[1] > 300
    assert pixels_of(path, FAILED) > 50  # accuracy fell below the champion's
    assert pixels_of(path, PASSED) > 50  # roc_auc rose
    assert pixels_of(path, UNJUDGED) > 50  # log_loss is not gated


def test_a_gate_that_passes_has_no_red_in_its_chart(tmp_path: Path) -> None:
    config = GateConfig(metrics={"roc_auc": MetricGate(threshold=0.9)})

    path = chart(tmp_path, config, None)

    assert pixels_of(path, FAILED) == 0
    assert pixels_of(path, PASSED) > 50


def test_more_metrics_make_a_taller_chart(tmp_path: Path) -> None:
    config = GateConfig(metrics={"roc_auc": MetricGate()})
    six = ("roc_auc", "accuracy", "f1", "precision", "recall", "log_loss")
    few = evaluate_gate({"roc_auc": 0.9}, None, config)
    many = evaluate_gate({m: 0.5 + i / 100 for i, m in enumerate(six)}, None, config)

    small = save_gate_chart(few, "few", tmp_path / "few.png")
    large = save_gate_chart(many, "many", tmp_path / "many.png")

    with Image.open(small) as a, Image.open(large) as b:
        assert b.size[1] > 3 * a.size[1] / 2


@pytest.mark.parametrize(
    ("challenger", "champion"),
    [
        ({**CHALLENGER, "roc_auc": float("nan")}, CHAMPION),
        (CHALLENGER, {**CHAMPION, "roc_auc": float("nan")}),
        ({**CHALLENGER, "roc_auc": float("inf")}, None),
        (
            {"roc_auc": 0.5, "accuracy": 0.5, "log_loss": 0.5},
            {"roc_auc": 0.5, "accuracy": 0.5, "log_loss": 0.5},
        ),
    ],
)
def test_values_that_cannot_be_placed_still_give_a_chart(
    tmp_path: Path, challenger: dict[str, float], champion: dict[str, float] | None
) -> None:
    config = GateConfig(metrics={"roc_auc": MetricGate(threshold=0.9)})
    gate = evaluate_gate(challenger, champion, config, "1" if champion else None)

    path = save_gate_chart(gate, "t", tmp_path / "gate.png")

    assert path.stat().st_size > 1000


def test_a_picture_that_cannot_be_drawn_is_left_out_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(path: Path) -> Path:
        raise ValueError("cannot place NaN")

    with caplog.at_level(logging.WARNING, "modelferry.pictures"):
        assert draw_picture(broken, tmp_path / "x.png") is False
    assert "Left out the picture x.png: ValueError: cannot place NaN" in caplog.text
    assert not (tmp_path / "x.png").exists()
    gate = evaluate_gate(CHALLENGER, None, GateConfig(metrics={"roc_auc": MetricGate()}))
    assert draw_picture(functools.partial(save_gate_chart, gate, "t"), tmp_path / "ok.png") is True
    assert (tmp_path / "ok.png").is_file()
