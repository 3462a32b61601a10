"""Idempotency-Key on mutating POSTs: same key and body within 24 h replays the first response."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from typing import Any, Final

from fastapi.responses import Response
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from shared.kit.clock import utcnow
from shared.kit.errors import IdempotencyConflict, Validation
from shared.models import IdempotencyRecord

TTL: Final = timedelta(hours=24)
MAX_KEY_LENGTH: Final = 255


def fingerprint(method: str, path: str, body: dict[str, Any]) -> bytes:
    """What 'the same request' means: method, path and the body's JSON, key order aside."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{method} {path}\n{canonical}".encode()).digest()


def replay(session: Session, organization_id: str, key: str, fp: bytes) -> Response | None:
    """The stored response for this key, or None to run the request fresh.

    Serialises concurrent requests with the same key on a transaction-scoped advisory lock,
    so the second waits for the first's commit and then replays it.
    """
    if not key or len(key) > MAX_KEY_LENGTH:
        raise Validation.at("Idempotency-Key", f"must be 1..{MAX_KEY_LENGTH} characters")
    session.execute(
        select(func.pg_advisory_xact_lock(func.hashtextextended(f"{organization_id}\n{key}", 0)))
    )
    record = session.get(IdempotencyRecord, (organization_id, key))
    if record is None:
        return None
    if record.created_at < utcnow() - TTL:
        session.execute(
            delete(IdempotencyRecord).where(
                IdempotencyRecord.organization_id == organization_id, IdempotencyRecord.key == key
            )
        )
        session.flush()
        return None
    if record.fingerprint != fp:
        raise IdempotencyConflict(
            "This Idempotency-Key was used with a different request body",
            {"idempotencyKey": key},
        )
    return Response(record.body, status_code=record.status_code, media_type="application/json")


def remember(
    session: Session, organization_id: str, key: str, fp: bytes, response: Response
) -> None:
    """Store a successful response, in the same transaction as the work it reports."""
    session.add(
        IdempotencyRecord(
            organization_id=organization_id,
            key=key,
            fingerprint=fp,
            status_code=response.status_code,
            body=bytes(response.body),
        )
    )
