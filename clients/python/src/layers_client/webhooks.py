"""Verifying what a webhook endpoint receives.

Every delivery is a POST whose `X-Layers-Signature` header is
`t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>`, with one `v1=` per signing
secret (two for 24 h after a rotation). A delivery is genuine when some `v1` verifies with
some secret you hold and `t` is within `tolerance_s` of now: an older one may be a replay.

    from layers_client.webhooks import verify, parse_event

    payload = verify(request.body, request.headers["X-Layers-Signature"], secret)
    event = parse_event(payload)

Pass the body's raw bytes, exactly as received: JSON parsed and dumped again is other bytes.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

from layers_client.errors import WebhookSignatureError
from layers_client.models import WebhookEvent

SIGNATURE_HEADER = "X-Layers-Signature"
EVENT_ID_HEADER = "X-Layers-Event-Id"
DEFAULT_TOLERANCE_S = 300


def verify(
    body: bytes,
    signature_header: str,
    secrets: Sequence[str] | str,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> dict[str, Any]:
    """The delivery's JSON body, once its signature verifies with one of `secrets`; else
    WebhookSignatureError (`reason`: malformed, stale or mismatch). `now` is Unix seconds
    (the current time when None)."""
    if isinstance(body, str):
        raise TypeError("body must be the raw bytes of the request, not text")
    keys = [secrets] if isinstance(secrets, str) else list(secrets)
    if not keys or not all(keys):
        raise ValueError("at least one non-empty secret is required")
    stamp, signatures = _parse_header(signature_header)
    moment = time.time() if now is None else now
    if abs(moment - stamp) > tolerance_s:
        raise WebhookSignatureError(
            "stale", f"the signature's time is {abs(moment - stamp):.0f} s from now"
        )
    signed = f"{stamp}.".encode() + body
    expected = [hmac.new(k.encode(), signed, hashlib.sha256).hexdigest() for k in keys]
    # Every pair compared, in constant time each: nothing returns early on a match.
    matches = [hmac.compare_digest(e, got) for e in expected for got in signatures]
    if not any(matches):
        raise WebhookSignatureError("mismatch", "no signature verifies with the given secrets")
    try:
        payload = json.loads(body)
    except ValueError as exc:
        raise WebhookSignatureError("malformed", "the signed body is not JSON") from exc
    if not isinstance(payload, dict):
        raise WebhookSignatureError("malformed", "the signed body is not a JSON object")
    return payload


def parse_event(payload: Mapping[str, Any] | bytes) -> WebhookEvent:
    """A verified delivery's body as a WebhookEvent (`id`, `type`, `created_at`, `data`,
    `replay_of`). Parse only what `verify` returned."""
    data = json.loads(payload) if isinstance(payload, bytes) else payload
    try:
        return WebhookEvent.from_wire(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise WebhookSignatureError("malformed", f"not a webhook event: {exc}") from exc


def construct_event(
    body: bytes,
    signature_header: str,
    secrets: Sequence[str] | str,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> WebhookEvent:
    """`verify`, then `parse_event`: the typed event of a genuine delivery."""
    return parse_event(verify(body, signature_header, secrets, tolerance_s, now))


def _parse_header(header: str) -> tuple[int, list[str]]:
    if not isinstance(header, str) or not header:
        raise WebhookSignatureError("malformed", f"no {SIGNATURE_HEADER} header")
    fields = [part.strip().split("=", 1) for part in header.split(",")]
    stamps = [kv[1] for kv in fields if len(kv) == 2 and kv[0] == "t"]
    signatures = [kv[1] for kv in fields if len(kv) == 2 and kv[0] == "v1" and kv[1]]
    if len(stamps) != 1 or not (stamps[0].isascii() and stamps[0].isdigit()):
        raise WebhookSignatureError("malformed", "the header has no single t=<unix seconds>")
    if not signatures:
        raise WebhookSignatureError("malformed", "the header has no v1= signature")
    return int(stamps[0]), signatures
