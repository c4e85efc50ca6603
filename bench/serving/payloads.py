"""Scoring request bodies for the online benchmark, in each server's format."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from bench.common.models import BenchModel


def request_body(model: BenchModel, rows: int, body_format: str) -> bytes:
    """A scoring request of `rows` real rows (the dataset repeated as needed).

    `body_format` is ``input_data`` (Azure ML's columns/index/data) or
    ``dataframe_split`` (MLflow's).
    """
    picked = model.rows[np.arange(rows) % len(model.rows)].tolist()
    if body_format == "input_data":
        document: dict[str, Any] = {
            "input_data": {"columns": model.columns, "index": list(range(rows)), "data": picked}
        }
    else:
        document = {"dataframe_split": {"columns": model.columns, "data": picked}}
    return orjson.dumps(document)
