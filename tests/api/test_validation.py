"""422: the validation table (each error names its field and writes nothing), and the
boundaries just inside that are accepted."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.api.helpers import (
    ACCOUNTS,
    CANCEL,
    POSTS,
    PUBLISH,
    RESCHEDULE,
    SCHEDULE,
    UPLOAD,
    Ctx,
    _b64,
    _broker_messages,
    _json,
    _media,
    _query,
    _s,
    _sa,
    _sched,
    _send,
    _t,
    _target,
    _up,
)
from tests.checks import counts as _counts
from tests.checks import issue_paths as _paths
from tests.checks import post_row as _row
from tests.factories import at

# (method, url template, request kwargs, the path expected among details.issues)
VALIDATION_CASES = {
    "cancel reason 1025": ("DELETE", CANCEL, _json({"reason": "r" * 1025}), "reason"),
    "cancel reason not a string": ("DELETE", CANCEL, _json({"reason": 5}), "reason"),
    "cancel unknown field": ("DELETE", CANCEL, _json({"why": "x"}), "why"),
    "schedule in the past": (
        "POST",
        SCHEDULE,
        lambda c: _sched(c, scheduledFor=at(-45)),
        "scheduledFor",
    ),
    "schedule naive time": (
        "POST",
        SCHEDULE,
        _s(scheduledFor="2031-01-01T00:00:00"),
        "scheduledFor",
    ),
    "schedule not a time": ("POST", SCHEDULE, _s(scheduledFor="tomorrow"), "scheduledFor"),
    "schedule past year 9999 in UTC": (
        "POST",
        SCHEDULE,
        _s(scheduledFor="9999-12-31T23:59:59-14:00"),
        "scheduledFor",
    ),
    "schedule no time": (
        "POST",
        SCHEDULE,
        lambda c: {"json": {"targets": _sched(c)["json"]["targets"]}},
        "scheduledFor",
    ),
    "schedule 0 targets": ("POST", SCHEDULE, _s(targets=[]), "targets"),
    "schedule 51 targets": (
        "POST",
        SCHEDULE,
        lambda c: _sched(c, targets=[{"socialAccountId": _sa()} for _ in range(51)]),
        "targets",
    ),
    "schedule foreign account": (
        "POST",
        SCHEDULE,
        lambda c: _sched(c, targets=[{"socialAccountId": c.other.accounts["tiktok"]}]),
        "targets[0].socialAccountId",
    ),
    "schedule unknown account": (
        "POST",
        SCHEDULE,
        _s(targets=[{"socialAccountId": _sa()}]),
        "targets[0].socialAccountId",
    ),
    "schedule malformed account": (
        "POST",
        SCHEDULE,
        _s(targets=[{"socialAccountId": "sa_nope"}]),
        "targets[0].socialAccountId",
    ),
    "schedule duplicate account": (
        "POST",
        SCHEDULE,
        lambda c: _sched(c, targets=[{"socialAccountId": c.tenant.accounts["tiktok"]}] * 2),
        "targets[1].socialAccountId",
    ),
    "schedule captionOverride 4001": (
        "POST",
        SCHEDULE,
        _t(captionOverride="c" * 4001),
        "targets[0].captionOverride",
    ),
    "schedule firstCommentOverride 4001": (
        "POST",
        SCHEDULE,
        _t(firstCommentOverride="c" * 4001),
        "targets[0].firstCommentOverride",
    ),
    "schedule bad mode": ("POST", SCHEDULE, _t(mode="story"), "targets[0].mode"),
    "schedule invalid scheduledPostId": (
        "POST",
        SCHEDULE,
        _t(scheduledPostId="sp_nope"),
        "targets[0].scheduledPostId",
    ),
    "schedule taken scheduledPostId": (
        "POST",
        SCHEDULE,
        lambda c: _target(c, scheduledPostId=c.post),
        "targets[0].scheduledPostId",
    ),
    "schedule unknown field": ("POST", SCHEDULE, _s(priority=1), "priority"),
    "schedule unknown target field": ("POST", SCHEDULE, _t(caption="x"), "targets[0].caption"),
    "schedule body not JSON": (
        "POST",
        SCHEDULE,
        lambda _: {"content": b"{nope", "headers": {"Content-Type": "application/json"}},
        "body",
    ),
    "schedule body a list": ("POST", SCHEDULE, _json([]), "body"),
    "publish 0 targets": ("POST", PUBLISH, _json({"targets": []}), "targets"),
    "publish foreign account": (
        "POST",
        PUBLISH,
        lambda c: {"json": {"targets": [{"socialAccountId": c.other.accounts["tiktok"]}]}},
        "targets[0].socialAccountId",
    ),
    "publish with scheduledFor": ("POST", PUBLISH, _sched, "scheduledFor"),
    "upload empty caption": ("POST", UPLOAD, lambda _: _up(caption=""), "caption"),
    "upload caption 2201": ("POST", UPLOAD, lambda _: _up(caption="c" * 2201), "caption"),
    "upload no media": ("POST", UPLOAD, lambda _: _up(media=[]), "media"),
    "upload 11 media": ("POST", UPLOAD, lambda _: _up(media=_media(11)), "media"),
    "upload http media": (
        "POST",
        UPLOAD,
        lambda _: _up(media=[{"url": "http://cdn.example.com/a.jpg"}]),
        "media[0].url",
    ),
    "upload bare https": (
        "POST",
        UPLOAD,
        lambda _: _up(media=[*_media(1), {"url": "https://"}]),
        "media[1].url",
    ),
    "upload media type audio": (
        "POST",
        UPLOAD,
        lambda _: _up(media=[{"url": "https://cdn.example.com/a.mp3", "type": "audio"}]),
        "media[0].type",
    ),
    "upload unknown field": ("POST", UPLOAD, lambda _: _up(title="x"), "title"),
    "upload Idempotency-Key 256": (
        "POST",
        UPLOAD,
        lambda _: {**_up(), "headers": {"Idempotency-Key": "k" * 256}},
        "Idempotency-Key",
    ),
    "reschedule too soon": (
        "POST",
        RESCHEDULE,
        lambda _: {"json": {"scheduledFor": at(10)}},
        "scheduledFor",
    ),
    "reschedule naive time": (
        "POST",
        RESCHEDULE,
        _json({"scheduledFor": "2031-01-01T00:00:00"}),
        "scheduledFor",
    ),
    "reschedule unknown field": (
        "POST",
        RESCHEDULE,
        lambda _: {"json": {"scheduledFor": at(600), "caption": "x"}},
        "caption",
    ),
    "posts limit 0": ("GET", POSTS, _query(limit=0), "limit"),
    "posts limit 101": ("GET", POSTS, _query(limit=101), "limit"),
    "posts limit not a number": ("GET", POSTS, _query(limit="ten"), "limit"),
    "posts bad cursor": ("GET", POSTS, _query(cursor="!!!"), "cursor"),
    "posts naive cursor": (
        "GET",
        POSTS,
        _query(cursor=_b64(["2031-01-01T00:00:00", "x"])),
        "cursor",
    ),
    "posts cursor of a dict": ("GET", POSTS, _query(cursor=_b64({"a": 1})), "cursor"),
    "posts cursor of numbers": ("GET", POSTS, _query(cursor=_b64([1, 2])), "cursor"),
    "posts since after until": (
        "GET",
        POSTS,
        _query(since="2031-01-02T00:00:00Z", until="2031-01-01T00:00:00Z"),
        "since",
    ),
    "posts naive since": ("GET", POSTS, _query(since="2031-01-02T00:00:00"), "since"),
    "posts bad status": ("GET", POSTS, _query(status="scheduled"), "status[0]"),
    "accounts bad platform": ("GET", ACCOUNTS, _query(platform="myspace"), "platform"),
    "accounts bad status": ("GET", ACCOUNTS, _query(status="banned"), "status"),
    "accounts limit 0": ("GET", ACCOUNTS, _query(limit=0), "limit"),
    "accounts limit 101": ("GET", ACCOUNTS, _query(limit=101), "limit"),
    "accounts bad cursor": ("GET", ACCOUNTS, _query(cursor=_b64("nope")[:-1]), "cursor"),
}


@pytest.mark.parametrize("case", list(VALIDATION_CASES))
def test_validation_errors_name_the_field(client: TestClient, ctx: Ctx, case: str) -> None:
    method, template, kwargs, path = VALIDATION_CASES[case]
    before = _counts()
    r = _send(client, ctx, method, template, kwargs(ctx))
    assert path in _paths(r)
    assert _counts() == before
    assert _row(ctx.post).status == "queued"
    assert _broker_messages() == []


BOUNDARY_CASES = {
    "cancel reason 1024": ("DELETE", CANCEL, _json({"reason": "r" * 1024})),
    "schedule 10 s in the past": ("POST", SCHEDULE, lambda c: _sched(c, scheduledFor=at(-10))),
    "caption 2200": ("POST", UPLOAD, lambda _: _up(caption="c" * 2200)),
    "10 media": ("POST", UPLOAD, lambda _: _up(media=_media(10))),
    # The caption's bound is the platform's (2200), the first comment's the wire's (4000).
    "overrides 2200 and 4000": (
        "POST",
        SCHEDULE,
        _t(captionOverride="c" * 2200, firstCommentOverride="f" * 4000),
    ),
    "reschedule 60 s ahead": ("POST", RESCHEDULE, lambda _: {"json": {"scheduledFor": at(60)}}),
    "posts limit 1": ("GET", POSTS, _query(limit=1)),
    "accounts limit 100": ("GET", ACCOUNTS, _query(limit=100)),
    "Idempotency-Key 255": (
        "POST",
        UPLOAD,
        lambda _: {**_up(), "headers": {"Idempotency-Key": "k" * 255}},
    ),
}


@pytest.mark.parametrize("case", list(BOUNDARY_CASES))
def test_boundaries_just_inside_are_accepted(client: TestClient, ctx: Ctx, case: str) -> None:
    method, template, kwargs = BOUNDARY_CASES[case]
    r = _send(client, ctx, method, template, kwargs(ctx))
    assert r.status_code in (200, 201), r.text
