"""What every mutating endpoint shares: one transaction, with Idempotency-Key replay."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Header
from fastapi.responses import Response
from pydantic import BaseModel

from api import idempotency
from api.deps import Principal
from api.errors import ErrorEnvelopeDoc
from api.schemas import Text
from shared.kit.db import Tx, transaction

IdempotencyKey = Annotated[
    Text | None,
    Header(
        alias="Idempotency-Key",
        max_length=idempotency.MAX_KEY_LENGTH,
        description="Replays the first response for the same key and body within 24 h.",
    ),
]


def run_mutation(
    principal: Principal,
    key: str | None,
    method: str,
    path: str,
    body: BaseModel | None,
    work: Callable[[Tx], Response],
) -> Response:
    """Run `work` in one transaction; with a key, replay or remember its response."""
    fp = idempotency.fingerprint(
        method, path, body.model_dump(mode="json", by_alias=True) if body is not None else {}
    )
    with transaction() as tx:
        if key is not None:
            replayed = idempotency.replay(tx.session, principal.organization_id, key, fp)
            if replayed is not None:
                return replayed
        response = work(tx)
        if key is not None:
            idempotency.remember(tx.session, principal.organization_id, key, fp, response)
    return response


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the envelope on each listed status (401/403/422/500 always)."""
    text = {
        401: "Missing, malformed, unknown or revoked key (UNAUTHENTICATED)",
        403: "The key lacks this endpoint's scope (FORBIDDEN_SCOPE); publish-now of content "
        "awaiting approval (APPROVAL_REQUIRED)",
        404: "No such object in the caller's organization (NOT_FOUND)",
        409: "The object's state forbids the change (CONFLICT, IDEMPOTENCY_CONFLICT); the "
        "content was rejected (CONTENT_REJECTED)",
        413: "The request body is over the size cap (PAYLOAD_TOO_LARGE)",
        422: "Bad input (VALIDATION); details.issues lists {path, message}",
        429: "Over the key's limit of the endpoint's class, or the organization's daily write "
        "cap (RATE_LIMITED); details.window says which",
        500: "A bug (INTERNAL); no internals leak",
        503: "A dependency is down (UNAVAILABLE); retry",
    }
    wanted = sorted({401, 403, 422, 429, 500, 503, *statuses})
    return {s: {"model": ErrorEnvelopeDoc, "description": text[s]} for s in wanted}
