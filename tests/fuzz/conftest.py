"""The fuzz suite: generated hostile input against the real entry points.

Each target (scoring server, delivery session, `modelferry validate`, the agent's package
verification) draws a bounded number of examples so the whole suite adds at most about two
minutes to CI. Examples are derandomised in CI, so a failure there reproduces locally with
`CI=true pytest tests/fuzz`; locally every run explores new input, and a failing example is
kept under `.modelferry/hypothesis` and replayed first next time.
"""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis.database import DirectoryBasedExampleDatabase

_DATABASE = DirectoryBasedExampleDatabase(
    str(Path(__file__).resolve().parents[2] / ".modelferry" / "hypothesis")
)

settings.register_profile(
    "fuzz",
    max_examples=60,
    # Targets are real processes and sessions: one example can take a while on 2 cores.
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    database=_DATABASE,
    print_blob=True,
)
settings.register_profile("fuzz-ci", parent=settings.get_profile("fuzz"), derandomize=True)
settings.load_profile("fuzz-ci" if os.environ.get("CI") else "fuzz")
