"""Property-based fuzz of every endpoint: one field at a time (body, query, path or header)
takes a hostile value, and whatever the value, the answer is no 5xx, every error is the
envelope with the response's request id, and a request that failed wrote nothing.

Where the schema-driven fuzz (test_fuzz.py) draws values its schema allows, this one draws
what a hostile client sends: NUL, lone surrogates, overlong UTF-8, bidi and zero-width marks,
4-byte emoji, exact and one-past maximum lengths, times at the calendar's edges, numbers as
strings and strings as numbers. Examples are derandomized: the same cases on every run."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from shared.kit.db import transaction
from shared.kit.settings import get_settings
from shared.models import ScheduledPost
from tests.checks import WRITTEN_TABLES, counts
from tests.factories import TenantFixture, at, blocked_intent, pending_upload, schedule, upload

# Per endpoint; about 10 ms a request in-process. FUZZ_EXAMPLES=5000 for a long hunt.
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "150"))
TABLES = (*WRITTEN_TABLES, "api_keys")

# --- hostile values -------------------------------------------------------------------------

NASTY = [
    "",
    "\u0000",
    "a\u0000b",
    "\ud800",
    "\udfff",
    "sp_\ud800",
    "\u202eevil\u202c",  # right-to-left override
    "\u200b\u200c\u200d\ufeff",  # zero-width marks, BOM
    "\U0001f600",  # 4 bytes in UTF-8, 2 UTF-16 units
    "\u0301",  # a lone combining mark
    "\uffff\ufffe",  # noncharacters
    "sp_00000000-0000-4000-8000-000000000000",
    "sp_00000000-0000-4000-8000-00000000000\u0000",
    "prj_../../etc/passwd",
    "' OR 1=1 --",
    "%00",
    "\\u0000",
    "null",
    "true",
    "1e309",
    "-0",
    "NaN",
    "https://",
    "https://\u0000.example",
    "https://127.0.0.1/x.mp4",
    "https://[::1]/x.mp4",
    "http://cdn.example.com/a.mp4",
]
# Exact and one-past lengths of every bound the contract names, in 1-, 2-, 3- and 4-byte chars.
LENGTHS = [64, 65, 255, 256, 512, 513, 1024, 1025, 2048, 2049, 2200, 2201, 4000, 4001]
TIMES = [
    "9999-12-31T23:59:59.5Z",
    "9999-12-31T23:59:59.999999Z",
    "9999-12-31T23:59:59Z",
    "9999-12-31T23:59:59-14:00",
    "0001-01-01T00:00:00+14:00",
    "0001-01-01T00:00:00Z",
    "2030-02-30T00:00:00Z",
    "2030-01-01T24:00:00Z",
    "2030-01-01T00:00:00+24:00",
    "2030-01-01T00:00:00",
    "2030-01-01",
    "1e10",
    "1700000000",
]
NUMBERS: list[Any] = [0, -1, 1, 2**31, 2**63, -(2**63) - 1, 10**400, 1.5, -0.0, 1e308, "10", "1e2"]


def _long(char: str, n: int) -> str:
    return char * n


def _long_strings() -> list[str]:
    return [_long(c, n) for c in ("a", "\u00e9", "\u20ac", "\U0001f600") for n in LENGTHS]


def hostile_strings() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(NASTY),
        st.sampled_from(TIMES),
        st.sampled_from(_long_strings()),
        # Every code point, surrogates included.
        st.text(st.characters(codec=None, exclude_categories=()), max_size=40),
    )


def _cursor(at: str, row_id: Any) -> str:
    raw = json.dumps([at, row_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def hostile_cursors() -> st.SearchStrategy[str]:
    """Cursors shaped like ours (base64url of `[time, id]`) around hostile values."""
    return st.one_of(
        hostile_strings(),
        st.builds(
            _cursor,
            st.sampled_from([*TIMES, "2027-01-01T00:00:00+00:00"]),
            st.one_of(hostile_strings(), st.sampled_from(NUMBERS), st.none()),
        ),
    )


def hostile_json() -> st.SearchStrategy[Any]:
    scalars = st.one_of(
        hostile_strings(),
        st.sampled_from(NUMBERS),
        st.booleans(),
        st.none(),
        st.floats(allow_nan=True, allow_infinity=True),
    )
    # Strings first: most of what the API stores is text.
    return st.one_of(
        hostile_strings(),
        scalars,
        st.lists(scalars, max_size=3),
        st.dictionaries(hostile_strings(), scalars, max_size=2),
    )


def catalogue(slot: Slot) -> list[Any]:
    """Every hostile value a slot is tried with, in full: no draw can miss one."""
    kind = slot[0]
    if kind == "raw":
        return RAW_BODIES
    strings = [*NASTY, *TIMES, *_long_strings()]
    if slot == ("query", "cursor"):
        return [_cursor(t, v) for t in ("2027-01-01T00:00:00+00:00", TIMES[0]) for v in NASTY]
    if kind == "body":
        return [*strings, *NUMBERS, None, True, [], {}, [None], {"": None}]
    return strings


# Bodies that are not UTF-8 at all: overlong encodings, lone continuation bytes, a CESU-8
# surrogate, a truncated sequence, each inside otherwise valid JSON framing.
RAW_BODIES = [
    b'{"caption": "\xc0\xaf", "media": [{"url": "https://cdn.example.com/a.mp4"}]}',
    b'{"caption": "\xe0\x80\xaf"}',
    b'{"reason": "\xed\xa0\x80"}',
    b'{"reason": "\x80\x81"}',
    b'{"scheduledFor": "2030-01-01T00:00:00Z\xf0\x9f"}',
    b"\xef\xbb\xbf{}",
    b'{"a": 1, "a": 2}',
    b"[" * 5000,
    b'{"reason": ' + b'"\\ud800"' + b"}",
    b"NaN",
    b"",
]

# --- the requests ---------------------------------------------------------------------------


@dataclass
class Ctx:
    tenant: TenantFixture
    headers: dict[str, str]
    container: str
    post: str
    pending: str  # a container awaiting approval
    intent: str  # a blocked schedule of it


@dataclass(frozen=True)
class Endpoint:
    """A valid request, and the places in it a hostile value may go."""

    method: str
    path: str  # with {project}, {container}, {post}, {pending}, {intent}
    body: Callable[[Ctx], Any] | None
    query: tuple[str, ...] = ()
    body_slots: tuple[tuple[str | int, ...], ...] = ()
    path_slots: tuple[str, ...] = ()
    idempotent: bool = False


def _target(ctx: Ctx, **extra: Any) -> dict[str, Any]:
    return {"socialAccountId": ctx.tenant.accounts["tiktok"], **extra}


ENDPOINTS = {
    "upload": Endpoint(
        "POST",
        "/v1/projects/{project}/content/upload",
        lambda c: {"caption": "hi", "media": [{"url": "https://cdn.example.com/a.mp4"}]},
        body_slots=(
            ("caption",),
            ("media",),
            ("media", 0),
            ("media", 0, "url"),
            ("media", 0, "type"),
        ),
        path_slots=("project",),
        idempotent=True,
    ),
    "get content": Endpoint("GET", "/v1/content/{container}", None, path_slots=("container",)),
    "list accounts": Endpoint(
        "GET",
        "/v1/projects/{project}/social-accounts",
        None,
        query=("platform", "status", "cursor", "limit"),
        path_slots=("project",),
    ),
    "schedule": Endpoint(
        "POST",
        "/v1/content/{container}/schedule",
        lambda c: {"scheduledFor": at(3600), "targets": [_target(c)]},
        body_slots=(
            ("scheduledFor",),
            ("targets",),
            ("targets", 0),
            ("targets", 0, "socialAccountId"),
            ("targets", 0, "mode"),
            ("targets", 0, "scheduledPostId"),
            ("targets", 0, "captionOverride"),
            ("targets", 0, "firstCommentOverride"),
        ),
        path_slots=("container",),
        idempotent=True,
    ),
    "publish": Endpoint(
        "POST",
        "/v1/content/{container}/publish",
        lambda c: {"targets": [_target(c, mode="draft")]},
        body_slots=(
            ("targets",),
            ("targets", 0, "socialAccountId"),
            ("targets", 0, "scheduledPostId"),
            ("targets", 0, "captionOverride"),
        ),
        path_slots=("container",),
        idempotent=True,
    ),
    "get post": Endpoint("GET", "/v1/scheduled-posts/{post}", None, path_slots=("post",)),
    "list posts": Endpoint(
        "GET",
        "/v1/projects/{project}/scheduled-posts",
        None,
        query=("status", "socialAccountId", "since", "until", "cursor", "limit"),
        path_slots=("project",),
    ),
    "reschedule": Endpoint(
        "POST",
        "/v1/scheduled-posts/{post}/reschedule",
        lambda c: {"scheduledFor": at(7200)},
        body_slots=(("scheduledFor",),),
        path_slots=("post",),
        idempotent=True,
    ),
    "cancel": Endpoint(
        "DELETE",
        "/v1/scheduled-posts/{post}",
        lambda c: {"reason": "changed my mind"},
        body_slots=(("reason",),),
        path_slots=("post",),
    ),
    "get policy": Endpoint(
        "GET", "/v1/projects/{project}/approval-policy", None, path_slots=("project",)
    ),
    "put policy": Endpoint(
        "PUT",
        "/v1/projects/{project}/approval-policy",
        lambda c: {"requiresApproval": False, "firstNPostsBlocked": 0, "autoApproveAfter": "PT2H"},
        body_slots=(("requiresApproval",), ("firstNPostsBlocked",), ("autoApproveAfter",)),
        path_slots=("project",),
    ),
    "schedule pending": Endpoint(
        "POST",
        "/v1/content/{pending}/schedule",
        lambda c: {"scheduledFor": at(3600), "targets": [_target(c)]},
        body_slots=(
            ("scheduledFor",),
            ("targets", 0, "socialAccountId"),
            ("targets", 0, "mode"),
            ("targets", 0, "scheduledPostId"),
            ("targets", 0, "captionOverride"),
        ),
        path_slots=("pending",),
        idempotent=True,
    ),
    "approve": Endpoint(
        "POST",
        "/v1/content/{pending}/approve",
        lambda c: {"reason": "fine"},
        body_slots=(("reason",),),
        path_slots=("pending",),
        idempotent=True,
    ),
    "reject": Endpoint(
        "POST",
        "/v1/content/{pending}/reject",
        lambda c: {"reason": "off brand"},
        body_slots=(("reason",),),
        path_slots=("pending",),
        idempotent=True,
    ),
    "list intents": Endpoint(
        "GET",
        "/v1/content/{pending}/schedule-intents",
        None,
        query=("cursor", "limit"),
        path_slots=("pending",),
    ),
    "get intent": Endpoint("GET", "/v1/schedule-intents/{intent}", None, path_slots=("intent",)),
    "cancel intent": Endpoint(
        "DELETE",
        "/v1/schedule-intents/{intent}",
        lambda c: {"reason": "not now"},
        body_slots=(("reason",),),
        path_slots=("intent",),
    ),
}


def _put(doc: Any, where: tuple[str | int, ...], value: Any) -> Any:
    if not where:
        return value
    head, rest = where[0], where[1:]
    copy = list(doc) if isinstance(doc, list) else dict(doc)
    # A last key the valid body lacks (an optional field) is simply added.
    copy[head] = _put(doc[head], rest, value) if rest else value  # type: ignore[index,call-overload]
    return copy


Slot = tuple[str, Any]  # (kind, name): ("body", ("targets", 0, "mode")), ("query", "limit"), ...


def _slots(endpoint: Endpoint) -> list[Slot]:
    slots: list[Slot] = [("header", "Authorization"), ("header", "X-Request-Id")]
    slots += [("body", s) for s in endpoint.body_slots]
    slots += [("query", q) for q in endpoint.query]
    slots += [("path", p) for p in endpoint.path_slots]
    if endpoint.idempotent:
        slots.append(("header", "Idempotency-Key"))
    if endpoint.body is not None:
        slots += [("raw", None), ("body", ())]
    return slots


@st.composite
def requests(draw: st.DrawFn, endpoint: Endpoint) -> tuple[Slot, Any]:
    """A slot of the endpoint, and the hostile value that fills it."""
    slot = draw(st.sampled_from(_slots(endpoint)))
    kind = slot[0]
    if kind == "raw":
        value: Any = draw(st.sampled_from(RAW_BODIES))
    elif kind == "body":
        value = draw(hostile_json())
    elif slot == ("query", "cursor"):
        value = draw(hostile_cursors())
    else:
        value = draw(hostile_strings())
    return slot, value


def _wire(value: str) -> bytes:
    """A string as a raw client puts it on the wire, lone surrogates and all."""
    return value.encode("utf-8", "surrogatepass")


def _build(ctx: Ctx, endpoint: Endpoint, slot: Slot, value: Any) -> dict[str, Any]:
    kind, name = slot
    names = {
        "project": ctx.tenant.project_id,
        "container": ctx.container,
        "post": ctx.post,
        "pending": ctx.pending,
        "intent": ctx.intent,
    }
    if kind == "path":
        names[name] = quote(_wire(value), safe="")
    url = endpoint.path.format(**names)
    headers: dict[str, Any] = dict(ctx.headers)
    kwargs: dict[str, Any] = {}
    if endpoint.body is not None:
        body = endpoint.body(ctx)
        if kind == "body":
            body = _put(body, name, value)
        # json.dumps writes a lone surrogate as its \\ud800 escape, as a hostile client would.
        kwargs["content"] = value if kind == "raw" else json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    if kind == "query":
        url += "?" + quote(name) + "=" + quote(_wire(value), safe="")
    if kind == "header":
        headers[name] = _wire(value)
    kwargs["headers"] = headers
    return {"method": endpoint.method, "url": url, **kwargs}


def _snapshot(post: str) -> tuple[dict[str, int], tuple[Any, ...]]:
    written = counts(TABLES)
    with transaction() as tx:
        row = tx.session.scalars(select(ScheduledPost).where(ScheduledPost.id == post)).one()
        state = (row.status, row.dispatch_version, row.scheduled_for, row.updated_at)
    return written, state


def _check(response: Any, before: Any, after: Any, slot: Slot, value: Any) -> None:
    label = f"{slot} = {value!r:.200}"
    assert response.status_code < 500, f"{label}: {response.status_code} {response.text[:300]}"
    rid = response.headers.get("x-request-id")
    assert rid, label
    if response.status_code >= 400:
        body = response.json()
        assert set(body) == {"error"}, (label, body)
        error = body["error"]
        assert set(error) == {"code", "message", "requestId", "details"}, (label, error)
        assert error["requestId"] == rid, label
        assert before == after, f"{label}: a failed request wrote {before} -> {after}"
    else:
        response.json()


def _send(client: TestClient, ctx: Ctx, endpoint: Endpoint, slot: Slot, value: Any) -> None:
    request = _build(ctx, endpoint, slot, value)
    before = _snapshot(ctx.post)
    response = client.request(**request)
    after = _snapshot(ctx.post)
    _check(response, before, after, slot, value)
    if after[1][0] != "queued":
        # A hostile value that was still valid canceled the post: the next value must find a
        # queued one, or a cancel's 409 would hide what the value does to a live post.
        (fresh,) = schedule(client, ctx.tenant, ctx.container, at(3600))
        ctx.post = str(fresh["id"])


@pytest.fixture
def ctx(client: TestClient, tenant: TenantFixture, monkeypatch: pytest.MonkeyPatch) -> Ctx:
    # Posts published now are due in an hour, not 30 s: a run lasts longer than that, and the
    # session's stack (once an integration test started it) dispatches due posts from this
    # database, whose events would look like a failed request's writes.
    monkeypatch.setattr(get_settings(), "publish_now_delay_s", 3600)
    container = upload(client, tenant)
    (post,) = schedule(client, tenant, container, at(3600))
    # Thousands of requests from one key: the rate limit is not what is being fuzzed.
    headers = tenant.key_with(
        "*", rate_limit_read=10**9, rate_limit_write=10**9, rate_limit_long_running=10**9
    )
    pending = pending_upload(client, tenant)
    intent = blocked_intent(client, tenant, pending, at(3600), None)
    return Ctx(tenant, headers, container, str(post["id"]), pending, str(intent["id"]))


@pytest.mark.parametrize("name", list(ENDPOINTS))
def test_hostile_values_never_5xx_and_failures_write_nothing(
    client: TestClient, ctx: Ctx, name: str
) -> None:
    endpoint = ENDPOINTS[name]

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(requests(endpoint))
    # The findings this fuzz exists for, always tried (skipped where the slot is not this
    # endpoint's).
    @example((("body", ("targets", 0, "captionOverride")), "\u0000"))
    @example((("body", ("scheduledFor",)), "9999-12-31T23:59:59.5Z"))
    @example((("body", ("reason",)), "\u0000"))
    @example((("query", "cursor"), _cursor("2027-01-01T00:00:00+00:00", "sp_\ud800")))
    @example((("query", "socialAccountId"), "\u0000"))
    def run(drawn: tuple[Slot, Any]) -> None:
        slot, value = drawn
        if slot in _slots(endpoint):
            _send(client, ctx, endpoint, slot, value)

    run()


@pytest.mark.parametrize("name", list(ENDPOINTS))
def test_every_slot_takes_every_catalogued_value(client: TestClient, ctx: Ctx, name: str) -> None:
    """The catalogue in full at every slot of the endpoint: the cases a draw might skip."""
    endpoint = ENDPOINTS[name]
    for slot in _slots(endpoint):
        for value in catalogue(slot):
            _send(client, ctx, endpoint, slot, value)
