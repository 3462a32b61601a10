"""How long the dispatcher waits before it gives up a task as lost, again.

A queued post whose task has not claimed it `REDISPATCH_GRACE_S` after its time, or a
webhook delivery whose attempt is that overdue, is taken for lost (Redis emptied, a worker
killed) and gets a new token and a new task. But a backlog that takes longer than the grace
to drain looks the same: re-sending then makes the task still waiting in the queue stale,
and its replacement waits behind the same backlog, to be re-sent in turn, for ever. So each
give-up of the same row waits twice as long as the last, up to LOST_BACKOFF_MAX graces: a
truly lost message is still replaced within a few graces, and a slow queue drains.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Final

from sqlalchemy import func

LOST_BACKOFF_MAX: Final = 8


def lost_backoff(grace: timedelta, times: Any) -> Any:
    """The SQL interval after which a task given up as lost `times` times (a column) is given
    up again: the grace, doubled each time, at most LOST_BACKOFF_MAX graces."""
    factor = func.least(func.power(2, times), LOST_BACKOFF_MAX)
    return func.make_interval(0, 0, 0, 0, 0, 0, grace.total_seconds() * factor)
