"""Structured logs: one JSON object per line, carrying the ids that let one post's life be
followed with grep (request id, organization, scheduled post, task, transition).

Nothing here ever formats a header or a key: the fields are ids and names only."""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Final

# Context set by the edges (request middleware, task wrapper) and read by every log line.
request_id: ContextVar[str | None] = ContextVar("log_request_id", default=None)
organization_id: ContextVar[str | None] = ContextVar("log_organization_id", default=None)
task_id: ContextVar[str | None] = ContextVar("log_task_id", default=None)

# Attributes every LogRecord has; anything else was passed through `extra=`.
_STANDARD: Final = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys()
    | {"message", "asctime", "color_message"}  # uvicorn's ANSI-coloured copy of the message
)


class JsonFormatter(logging.Formatter):
    """`{"ts", "level", "logger", "event", ...context, ...extra}` on one line."""

    def __init__(self, role: str) -> None:
        super().__init__()
        self.role = role

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "role": self.role,
            "logger": record.name,
            "event": record.getMessage(),
        }
        for name, var in (
            ("requestId", request_id),
            ("organizationId", organization_id),
            ("taskId", task_id),
        ):
            value = var.get()
            if value is not None:
                out[name] = value
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, separators=(",", ":"))


def configure(role: str, level: int = logging.INFO) -> None:
    """Send every logger's records to stderr as JSON lines, tagged with the process role."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(role))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # Per-request access lines come from our own middleware, with ids and no headers; per-task
    # lines from our transitions, with the post id. Celery's own "received"/"succeeded" pair
    # would add two lines a second for the ticks alone.
    for noisy in (
        "uvicorn.access",
        "httpx",
        "httpcore",
        "celery.app.trace",
        "celery.worker.strategy",
    ):
        logging.getLogger(noisy).setLevel(logging.WARNING)


_transitions = logging.getLogger("publisher.transitions")


def transition(post_id: str, organization: str | None, change: str, **fields: Any) -> None:
    """One committed state change of a post (`queued->canceled`), for following it by id."""
    _transitions.info(
        "transition",
        extra={
            "postId": post_id,
            "postOrganizationId": organization,
            "transition": change,
            **fields,
        },
    )
