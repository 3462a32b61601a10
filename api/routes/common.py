"""What every mutating endpoint shares: one transaction, with Idempotency-Key replay."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Final, Union, cast

from fastapi import Header
from fastapi.responses import Response
from pydantic import BaseModel

from api import idempotency
from api.deps import Principal
from api.schemas import ENVELOPES, ERRORS, ErrorKind, Text
from shared.kit.db import Tx, transaction

IdempotencyKey = Annotated[
    Text | None,
    Header(
        alias="Idempotency-Key",
        max_length=idempotency.MAX_KEY_LENGTH,
        description="Replays the first response for the same key and body within 24 h; the "
        "same key with another body or path is 409 IDEMPOTENCY_CONFLICT. The organization's "
        "keys, not the API key's.",
        # Only documents what `idempotency.replay` refuses, with its own message (a
        # `min_length` here would answer pydantic's instead).
        json_schema_extra={"minLength": 1},
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


# The codes every /v1 operation can answer, and those of every request with a body.
ALWAYS: Final = (
    "UNAUTHENTICATED",
    "FORBIDDEN_SCOPE",
    "VALIDATION",
    "RATE_LIMITED",
    "INTERNAL",
    "UNAVAILABLE",
)
WITH_BODY: Final = ("REQUEST_TIMEOUT", "PAYLOAD_TOO_LARGE")


def errors(*codes: str, body: bool = False) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI entries of an operation's error answers: those of every operation, those
    of a request with a body (`body`), and its own `codes`. One entry per status, whose
    schema is the envelope of each code it can carry (a union when several can)."""
    by_status: dict[int, list[ErrorKind]] = {}
    for code in dict.fromkeys((*ALWAYS, *(WITH_BODY if body else ()), *codes)):
        kind = ERRORS[code]
        by_status.setdefault(kind.status, []).append(kind)
    out: dict[int | str, dict[str, Any]] = {}
    for status, kinds in sorted(by_status.items()):
        models = tuple(ENVELOPES[kind.code] for kind in kinds)
        out[status] = {
            "model": models[0] if len(models) == 1 else cast(Any, Union)[models],
            "description": " ".join(f"`{kind.code}`: {kind.summary}" for kind in kinds),
        }
    return out
