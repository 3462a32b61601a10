"""How long the dispatcher waits before it gives up a task as lost, again.

A queued post whose task has not claimed it `REDISPATCH_GRACE_S` after its time, or a
webhook delivery whose attempt is that overdue, is taken for lost (Redis emptied, a worker
killed) and gets a new token and a new task. But a backlog that takes longer than the grace
to drain looks the same: re-sending then makes the task still waiting in the queue stale,
and its replacement waits behind the same backlog, to be re-sent in turn, for ever. So each
give-up of the same row waits twice as long as the last, up to LOST_BACKOFF_MAX graces, and
the count starts again once a task of the row has run (a post claimed, a delivery's attempt
begun): a truly lost message is still replaced within a grace or two, and a backlog however
long costs each row a few re-sends (about log2 of its wait over the grace) before its task
runs, so the queue drains. A cap of a few graces is not enough: a long run of 20,000 posts
with webhooks on a saturated two-core machine had 80,000 deliveries re-armed every 40 s
behind a queue that took longer than that to reach them, and none delivered for minutes.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Final

from sqlalchemy import func

# 2^10 graces: about four hours at the 15 s default, a day's backlog in a dozen re-sends.
LOST_BACKOFF_MAX: Final = 1024


def lost_backoff(grace: timedelta, times: Any) -> Any:
    """The SQL interval after which a task given up as lost `times` times (a column) is given
    up again: the grace, doubled each time, at most LOST_BACKOFF_MAX graces."""
    factor = func.least(func.power(2, times), LOST_BACKOFF_MAX)
    return func.make_interval(0, 0, 0, 0, 0, 0, grace.total_seconds() * factor)
