"""How long the dispatcher waits before it gives up a task as lost, again.

A queued post whose task has not claimed it `REDISPATCH_GRACE_S` after its time, or a
webhook delivery whose attempt is that overdue, is taken for lost (Redis emptied, a worker
killed) and gets a copy of its task. But a backlog that takes longer than the grace to drain
looks the same. So:

- The copy carries the same token: the task still waiting in the queue stays good, and
  whichever runs first claims the post or takes the attempt; the other finds it done. A
  copy under a new token would make the queued one stale, and under a backlog slower than
  the grace only the newest copy, always at the back of the queue, could ever run. A long
  run of 20,000 posts with webhooks on a saturated two-core machine showed it: 80,000
  deliveries re-armed again and again, every message the worker reached stale, none
  delivered for minutes.
- Each give-up of the same row waits twice as long as the last, up to LOST_BACKOFF_MAX
  graces, and the count starts again once a task of the row has run (a post claimed, a
  delivery's attempt begun): a truly lost message is still replaced within a grace or two,
  and a backlog however long costs each row a few copies (about log2 of its wait over the
  grace), not one every grace.
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


def lost_backoff_delay(grace: timedelta, times: int) -> timedelta:
    """`lost_backoff` in Python, for a row at hand: the grace doubled `times` times, at most
    LOST_BACKOFF_MAX graces."""
    factor: int = min(2**times, LOST_BACKOFF_MAX)
    return grace * factor
