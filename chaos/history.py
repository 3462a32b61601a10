"""What a chaos run saw: every API call with its times and answer, the platform's ledger, and
the final state of every post. The checker reads only this, so a history can be built by hand
to show that the checker catches a broken one."""

from __future__ import annotations

import json
import threading
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Call:
    """One API request and its answer (times are epoch seconds)."""

    kind: str  # schedule | publish | cancel | reschedule | read
    post_id: str | None
    sent_at: float
    answered_at: float
    status: int  # HTTP status; 0 when no answer arrived (connection error, timeout)
    body: dict[str, Any] | None = None
    reason: str | None = None  # cancel
    scheduled_for: str | None = None  # reschedule: the time asked for


@dataclass(frozen=True)
class LedgerEntry:
    idempotency_key: str
    external_id: str
    received_at: datetime


@dataclass(frozen=True)
class FinalPost:
    id: str
    status: str
    scheduled_for: datetime
    external_id: str | None
    last_error_code: str | None
    finished_at: datetime | None  # when it became terminal (updated_at of a terminal row)
    # Its platform completes a post on its own after accepting it (TikTok): invariant 5
    # allows it the platform's processing time too.
    completes_later: bool = False


@dataclass(frozen=True)
class WebhookReceipt:
    """One event a receiver kept (its first 2xx delivery): what a deduplicating receiver
    acts on."""

    event_id: str
    type: str
    post_id: str | None
    status: str | None
    verified: bool


@dataclass(frozen=True)
class Fault:
    """One fault: `at` when it was injected or, for one that lasts (a spell, an outage),
    when it ended; `began` when it began."""

    kind: str
    at: float
    detail: str = ""
    began: float = 0.0


@dataclass
class History:
    calls: list[Call] = field(default_factory=list)
    ledger: list[LedgerEntry] = field(default_factory=list)
    # Publish requests the platform received, retries included; None where it counts none
    # (the Instagram emulator).
    ledger_requests: int | None = None
    posts: dict[str, FinalPost] = field(default_factory=dict)
    # post id -> reasons of the audit log's cancel entries; None when not readable.
    audit: dict[str, list[str | None]] | None = None
    faults: list[Fault] = field(default_factory=list)
    # endpoint name -> the events it kept; None when the run registered no endpoint.
    webhooks: dict[str, list[WebhookReceipt]] | None = None
    # Deliveries still pending when the run stopped waiting for them.
    webhooks_pending: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def record(self, call: Call) -> None:
        with self._lock:
            self.calls.append(call)

    def fault(self, fault: Fault) -> None:
        with self._lock:
            self.faults.append(fault)

    def calls_for(self, post_id: str) -> list[Call]:
        return sorted((c for c in self.calls if c.post_id == post_id), key=lambda c: c.sent_at)

    def dump(self, path: Path) -> None:
        """The whole history as JSON, for a later look at a failed run."""
        data = {
            "calls": [asdict(c) for c in self.calls],
            "ledger": [asdict(e) for e in self.ledger],
            "ledgerRequests": self.ledger_requests,
            "posts": {k: asdict(v) for k, v in self.posts.items()},
            "audit": self.audit,
            "faults": [asdict(f) for f in self.faults],
            "webhooks": (
                None
                if self.webhooks is None
                else {k: [asdict(r) for r in v] for k, v in self.webhooks.items()}
            ),
        }
        path.write_text(json.dumps(data, default=str, indent=1))
