"""Task names, dotted domain.action, in one place: Flower shows these to operators."""

from __future__ import annotations

from typing import Final


class TaskName:
    PUBLISH: Final = "publishing.publish"
    DISPATCH_DUE: Final = "publishing.dispatch_due"
    RECONCILE: Final = "publishing.reconcile"
    REAP: Final = "publishing.reap_expired"


PUBLISH_QUEUE: Final = "publishing"
CONTROL_QUEUE: Final = "control"
