"""`layers_client.webhooks.verify`: a good signature, a stale one either way, a wrong one, a
malformed header, and a rotation's two signatures, each verifying with its own secret."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest

from layers_client import WebhookEvent, WebhookSignatureError
from layers_client.webhooks import construct_event, parse_event, verify

NOW = 1_776_540_161
OLD, NEW = "whsec_old", "whsec_new"
BODY = json.dumps(
    {
        "createdAt": "2026-04-18T19:22:41Z",
        "data": {"scheduledPostId": "sp_1", "status": "published"},
        "id": "evt_01HXYZ",
        "type": "post.published",
    },
    separators=(",", ":"),
    sort_keys=True,
).encode()


def sign(body: bytes, t: int, *secrets: str) -> str:
    """Written from the contract (`t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`)."""
    macs = [
        hmac.new(s.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest() for s in secrets
    ]
    return ",".join([f"t={t}", *(f"v1={m}" for m in macs)])


def test_a_good_signature_gives_the_payload() -> None:
    payload = verify(BODY, sign(BODY, NOW, NEW), NEW, now=NOW + 10)
    assert payload["type"] == "post.published"
    event = parse_event(payload)
    assert isinstance(event, WebhookEvent)
    assert (event.id, event.type, event.data["scheduledPostId"]) == (
        "evt_01HXYZ",
        "post.published",
        "sp_1",
    )
    assert event.created_at.tzinfo is not None and event.replay_of is None
    assert construct_event(BODY, sign(BODY, NOW, NEW), [NEW], now=NOW) == event


@pytest.mark.parametrize("skew", [301, -301, 3600])
def test_a_stale_signature_is_refused(skew: int) -> None:
    with pytest.raises(WebhookSignatureError) as err:
        verify(BODY, sign(BODY, NOW, NEW), NEW, now=NOW + skew)
    assert err.value.reason == "stale"
    # Within the tolerance either way, and a tolerance of one's own.
    verify(BODY, sign(BODY, NOW, NEW), NEW, now=NOW + 300)
    verify(BODY, sign(BODY, NOW, NEW), NEW, now=NOW - 300)
    verify(BODY, sign(BODY, NOW, NEW), NEW, now=NOW + 3600, tolerance_s=3600)


def test_a_wrong_secret_or_a_changed_body_is_refused() -> None:
    with pytest.raises(WebhookSignatureError) as err:
        verify(BODY, sign(BODY, NOW, "whsec_other"), NEW, now=NOW)
    assert err.value.reason == "mismatch"
    with pytest.raises(WebhookSignatureError):
        verify(BODY.replace(b"published", b"failed"), sign(BODY, NOW, NEW), NEW, now=NOW)
    # The time is signed too: another t with the same v1 fails.
    forged = sign(BODY, NOW, NEW).replace(f"t={NOW}", f"t={NOW + 1}")
    with pytest.raises(WebhookSignatureError):
        verify(BODY, forged, NEW, now=NOW)


def test_during_a_rotation_either_secret_verifies() -> None:
    header = sign(BODY, NOW, NEW, OLD)
    assert verify(BODY, header, NEW, now=NOW)
    assert verify(BODY, header, [OLD], now=NOW)
    assert verify(BODY, header, [NEW, OLD], now=NOW)
    # A receiver that already holds the new secret accepts deliveries signed by the old only.
    assert verify(BODY, sign(BODY, NOW, OLD), [NEW, OLD], now=NOW)
    with pytest.raises(WebhookSignatureError):
        verify(BODY, header, ["whsec_neither"], now=NOW)


@pytest.mark.parametrize(
    "header",
    ["", "v1=abc", f"t={NOW}", f"t={NOW},t={NOW},v1=abc", "t=soon,v1=abc", f"t={NOW},v1="],
)
def test_a_malformed_header_is_refused(header: str) -> None:
    with pytest.raises(WebhookSignatureError) as err:
        verify(BODY, header, NEW, now=NOW)
    assert err.value.reason == "malformed"


def test_only_raw_bytes_and_real_secrets_are_taken() -> None:
    with pytest.raises(TypeError):
        verify(BODY.decode(), sign(BODY, NOW, NEW), NEW, now=NOW)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        verify(BODY, sign(BODY, NOW, NEW), [], now=NOW)
    with pytest.raises(ValueError):
        verify(BODY, sign(BODY, NOW, NEW), "", now=NOW)


def test_a_replay_names_its_original() -> None:
    body = json.loads(BODY) | {"replayOf": "evt_01HXYA"}
    assert parse_event(body).replay_of == "evt_01HXYA"
    with pytest.raises(WebhookSignatureError):
        parse_event({"id": "evt_1"})
