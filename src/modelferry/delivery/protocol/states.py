"""The states a delivery can be in, on the cloud side.

Devices report `Success` and `Error` (terminal) and any intermediate string they like
(`Received`, `Downloading`, `Verifying`, `Installing` from our agent). The cloud side adds
`Pending` (recorded, not yet sent), `Notified` (newDelivery sent), `TimedOut` (a clock ran
out) and `Skipped` (never started: the rollout was aborted first).
"""

from __future__ import annotations

from modelferry.delivery.protocol.messages import STATE_ERROR, STATE_SUCCESS

PENDING = "Pending"
NOTIFIED = "Notified"
SUCCESS = STATE_SUCCESS
ERROR = STATE_ERROR
TIMED_OUT = "TimedOut"
SKIPPED = "Skipped"
#: States after which nothing changes a delivery.
FINAL_STATES = frozenset({SUCCESS, ERROR, TIMED_OUT, SKIPPED})
#: Final states that count as a failed delivery.
FAILED_STATES = frozenset({ERROR, TIMED_OUT})
