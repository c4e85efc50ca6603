"""How an approval pause is marked, and when its reviewer's time runs out.

The flow pauses with `APPROVAL_PAUSE_KEY` and gives Prefect's server a deadline
`SERVER_GRACE_SECONDS` later than the reviewer's own (so that the flow, not the server,
closes a timed-out pause as a recorded rejection). Everything shown to people, such as
`modelferry pending`, uses the reviewer's deadline: the one the run logged.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Final

__all__ = ["APPROVAL_PAUSE_KEY", "SERVER_GRACE_SECONDS", "reviewer_deadline"]

APPROVAL_PAUSE_KEY: Final = "modelferry-approval"
SERVER_GRACE_SECONDS: Final = 120


def reviewer_deadline(pause_key: str | None, server_deadline: datetime | None) -> datetime | None:
    """When the reviewer's time runs out, from the pause's key and the server's deadline.

    A pause made by another flow keeps the server's deadline, which is then the only one.
    """
    if server_deadline is None or pause_key != APPROVAL_PAUSE_KEY:
        return server_deadline
    return server_deadline - timedelta(seconds=SERVER_GRACE_SECONDS)
