"""Tests for the TikTok emulator (sandbox/tiktok.py): the Content Posting flow as TikTok
documents it, tokens and their refresh, the per-token limits, its knobs, and faults
reproducible per key."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

import sandbox.tiktok
from harness.stack import ROOT
from sandbox.tiktok import create_app
from sandbox.tiktok_faults import TikTokFaults
from tests.emulators import (
    SEEDED_FAULTS,
    FakeClock,
    KnobTests,
    Script,
    SeededTests,
    Step,
    all_at_once,
    put_faults,
    served_tiktok,
)

DAY = 86_400.0
# Newlines, emoji, a hashtag, a mention, markup and trailing space: stored verbatim.
CAPTION = "Spring 🌸 drop\n\nLine two — #new @friend <b>&amp;</b> "
VIDEO_URL = "https://cdn.example/clip.mp4"
PHOTOS = ["https://cdn.example/1.jpg", "https://cdn.example/2.jpg", "https://cdn.example/3.jpg"]
EVERY_LEVEL = ["PUBLIC_TO_EVERYONE", "MUTUAL_FOLLOW_FRIENDS", "FOLLOWER_OF_CREATOR", "SELF_ONLY"]
INIT = "/v2/post/publish/video/init/"
INBOX = "/v2/post/publish/inbox/video/init/"
CONTENT = "/v2/post/publish/content/init/"
STATUS = "/v2/post/publish/status/fetch/"
CREATOR_INFO = "/v2/post/publish/creator_info/query/"
TOKEN = "/v2/oauth/token/"  # noqa: S105 (a path, not a secret)
LIST = "/v2/video/list/"


@dataclass
class Env:
    """An emulator app in process, with its fake clock."""

    client: TestClient
    clock: FakeClock = field(default_factory=FakeClock)

    def creator(self, **body: Any) -> Tt:
        return Tt(self.client, **body)

    def faults(self, **knobs: Any) -> None:
        put_faults(self.client, **knobs)

    def ledger(self) -> list[dict[str, Any]]:
        posts: list[dict[str, Any]] = self.client.get("/ledger").json()["posts"]
        return posts


def _env(**knobs: Any) -> Env:
    clock = FakeClock()
    return Env(TestClient(create_app(TikTokFaults(**knobs), clock)), clock)


def video_body(
    title: str = CAPTION, privacy: str | None = "PUBLIC_TO_EVERYONE", url: str = VIDEO_URL
) -> dict[str, Any]:
    post_info: dict[str, Any] = {
        "title": title,
        "disable_duet": False,
        "disable_comment": False,
        "disable_stitch": False,
        "video_cover_timestamp_ms": 1000,
    }
    if privacy is not None:
        post_info["privacy_level"] = privacy
    return {"post_info": post_info, "source_info": {"source": "PULL_FROM_URL", "video_url": url}}


def photo_body(
    mode: str = "DIRECT_POST",
    title: str = "three photos",
    description: str = CAPTION,
    privacy: str | None = "PUBLIC_TO_EVERYONE",
    images: list[str] | None = None,
    cover: int = 0,
) -> dict[str, Any]:
    post_info: dict[str, Any] = {
        "title": title,
        "description": description,
        "disable_comment": False,
        "auto_add_music": True,
    }
    if privacy is not None:
        post_info["privacy_level"] = privacy
    return {
        "post_info": post_info,
        "source_info": {
            "source": "PULL_FROM_URL",
            "photo_images": PHOTOS if images is None else images,
            "photo_cover_index": cover,
        },
        "post_mode": mode,
        "media_type": "PHOTO",
    }


class Tt:
    """One emulated creator, and the calls a client makes for it."""

    def __init__(self, client: TestClient, **body: Any) -> None:
        self.client = client
        created = client.post("/emulator/accounts", json=body)
        assert created.status_code in (200, 201), created.text
        self.account: dict[str, Any] = created.json()
        self.open_id: str = self.account["openId"]
        self.token: str = self.account["accessToken"]
        self.refresh_token: str = self.account["refreshToken"]

    def post(self, path: str, body: Any = None, **params: Any) -> httpx.Response:
        response: httpx.Response = self.client.post(
            path,
            json=body,
            params=params,
            headers={"Authorization": f"Bearer {self.token}"},
        )
        return response

    def data(self, path: str, body: Any = None, **params: Any) -> dict[str, Any]:
        response = self.post(path, body, **params)
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["error"]["code"] == "ok" and answer["error"]["log_id"]
        data: dict[str, Any] = answer["data"]
        return data

    def video(self, **kwargs: Any) -> str:
        publish_id: str = self.data(INIT, video_body(**kwargs))["publish_id"]
        return publish_id

    def status(self, publish_id: str) -> dict[str, Any]:
        return self.data(STATUS, {"publish_id": publish_id})

    def videos(self, fields: str = "id,title,create_time", **body: Any) -> dict[str, Any]:
        return self.data(LIST, body, fields=fields)

    def refresh(self, refresh_token: str | None = None) -> httpx.Response:
        response: httpx.Response = self.client.post(
            TOKEN,
            data={
                "client_key": "aw_key",
                "client_secret": "aw_secret",
                "grant_type": "refresh_token",
                "refresh_token": refresh_token or self.refresh_token,
            },
        )
        return response


def tiktok_error(response: httpx.Response) -> tuple[int, str]:
    """(HTTP status, code) of a v2 error, after checking its shape."""
    body = response.json()
    assert body["data"] == {}
    error = body["error"]
    assert set(error) == {"code", "message", "log_id"}, error
    assert error["code"] != "ok" and error["message"] and error["log_id"]
    return response.status_code, error["code"]


def oauth_error(response: httpx.Response) -> tuple[int, str]:
    """(HTTP status, error) of an OAuth error, after checking its shape."""
    body = response.json()
    assert set(body) == {"error", "error_description", "log_id"}, body
    return response.status_code, body["error"]


def _outcome(response: httpx.Response) -> str:
    """A response without its random parts (ids, log ids)."""
    try:
        body = response.json()
    except ValueError:
        return f"{response.status_code} not-json"
    error = body.get("error")
    if isinstance(error, str):
        return f"{response.status_code} {error}"
    if isinstance(error, dict) and error.get("code") != "ok":
        return f"{response.status_code} {error['code']}"
    return f"{response.status_code} ok"


# --- Creator info and the happy flows ---------------------------------------------------------


def test_creator_info_answers_the_creators_options() -> None:
    env = _env()
    tt = env.creator(username="shop.daily", nickname="Shop Daily")
    info = tt.post(CREATOR_INFO).json()
    assert info["error"]["code"] == "ok"
    assert info["error"]["message"] == ""
    assert info["data"] == {
        "creator_avatar_url": info["data"]["creator_avatar_url"],
        "creator_username": "shop.daily",
        "creator_nickname": "Shop Daily",
        "privacy_level_options": EVERY_LEVEL,
        "comment_disabled": False,
        "duet_disabled": False,
        "stitch_disabled": False,
        "max_video_post_duration_sec": 300,
    }
    assert info["data"]["creator_avatar_url"].startswith("https://p16.tiktok.emulator.example/")

    private = env.creator(privacyLevelOptions=["SELF_ONLY"], maxVideoPostDurationSec=60)
    data = private.data(CREATOR_INFO)
    assert data["privacy_level_options"] == ["SELF_ONLY"]
    assert data["max_video_post_duration_sec"] == 60


def test_a_direct_video_post_goes_public_after_processing_and_moderation() -> None:
    env = _env(processing_s=4.0, moderation_s=30.0)
    tt = env.creator()
    before = env.clock.now()
    publish_id = tt.video()
    assert publish_id.startswith("v_pub_url~v2.")
    assert tt.status(publish_id) == {"status": "PROCESSING_DOWNLOAD"}
    env.clock.advance(3.9)
    assert tt.status(publish_id) == {"status": "PROCESSING_DOWNLOAD"}
    env.clock.advance(0.1)
    # Complete, but not public until moderation passed: no post id yet.
    assert tt.status(publish_id) == {"status": "PUBLISH_COMPLETE"}
    assert tt.videos()["videos"] == []
    (post,) = env.ledger()
    assert (post["status"], post["externalId"]) == ("PUBLISH_COMPLETE", publish_id)

    env.clock.advance(30.0)
    done = tt.status(publish_id)
    (post_id,) = done["publicaly_available_post_id"]
    assert isinstance(post_id, int) and len(str(post_id)) == 19
    (post,) = env.ledger()
    assert post == {
        "externalId": str(post_id),
        "accountId": tt.open_id,
        "caption": CAPTION,
        "mediaUrls": [VIDEO_URL],
        "mediaType": "VIDEO",
        "containerId": publish_id,
        "receivedAt": "2025-06-15T15:06:40.000Z",
        "status": "PUBLISH_COMPLETE",
        "inbox": False,
        "title": CAPTION,
        "description": "",
        "privacyLevel": "PUBLIC_TO_EVERYONE",
        "failReason": None,
    }
    listed = tt.videos("id,title,video_description,create_time,share_url,duration")
    assert listed["videos"] == [
        {
            "id": str(post_id),
            "title": CAPTION,
            "video_description": CAPTION,
            "create_time": int(before + 4),
            "share_url": f"https://www.tiktok.emulator.example/@{tt.account['username']}"
            f"/video/{post_id}",
            "duration": 15,
        }
    ]
    assert listed["has_more"] is False


def test_a_private_post_completes_without_a_public_id_and_is_not_listed() -> None:
    env = _env(processing_s=1.0, moderation_s=0.0)
    tt = env.creator(privacyLevelOptions=["FOLLOWER_OF_CREATOR", "SELF_ONLY"])
    publish_id = tt.video(privacy="SELF_ONLY")
    env.clock.advance(3600.0)
    assert tt.status(publish_id) == {"status": "PUBLISH_COMPLETE"}
    assert tt.videos()["videos"] == []
    (post,) = env.ledger()
    assert (post["externalId"], post["status"], post["privacyLevel"]) == (
        publish_id,
        "PUBLISH_COMPLETE",
        "SELF_ONLY",
    )


def test_an_inbox_video_ends_in_the_creators_inbox() -> None:
    env = _env(processing_s=2.0)
    tt = env.creator()
    body = {"source_info": {"source": "PULL_FROM_URL", "video_url": VIDEO_URL}}
    publish_id = tt.data(INBOX, body)["publish_id"]
    assert publish_id.startswith("v_inbox_url~v2.")
    assert tt.status(publish_id) == {"status": "PROCESSING_DOWNLOAD"}
    env.clock.advance(2.0)
    assert tt.status(publish_id) == {"status": "SEND_TO_USER_INBOX"}
    env.clock.advance(3600.0)
    assert tt.status(publish_id) == {"status": "SEND_TO_USER_INBOX"}
    assert tt.videos()["videos"] == []
    (post,) = env.ledger()
    assert {k: post[k] for k in ("externalId", "caption", "mediaType", "status", "inbox")} == {
        "externalId": publish_id,
        "caption": "",
        "mediaType": "VIDEO",
        "status": "SEND_TO_USER_INBOX",
        "inbox": True,
    }


def test_photos_as_a_direct_post_and_as_an_upload_to_the_inbox() -> None:
    env = _env(processing_s=1.0, moderation_s=1.0)
    tt = env.creator()
    direct = tt.data(CONTENT, photo_body())["publish_id"]
    upload = tt.data(CONTENT, photo_body("MEDIA_UPLOAD", privacy=None))["publish_id"]
    assert direct.startswith("p_pub_url~v2.")
    assert upload.startswith("p_inbox_url~v2.")
    env.clock.advance(2.0)
    (post_id,) = tt.status(direct)["publicaly_available_post_id"]
    assert tt.status(upload) == {"status": "SEND_TO_USER_INBOX"}

    posted, drafted = env.ledger()
    assert posted == {
        "externalId": str(post_id),
        "accountId": tt.open_id,
        "caption": CAPTION,
        "mediaUrls": PHOTOS,
        "mediaType": "PHOTO",
        "containerId": direct,
        "receivedAt": posted["receivedAt"],
        "status": "PUBLISH_COMPLETE",
        "inbox": False,
        "title": "three photos",
        "description": CAPTION,
        "privacyLevel": "PUBLIC_TO_EVERYONE",
        "failReason": None,
    }
    assert (drafted["status"], drafted["inbox"], drafted["caption"]) == (
        "SEND_TO_USER_INBOX",
        True,
        CAPTION,
    )
    listed = tt.videos("id,title,video_description,duration,share_url")["videos"]
    assert listed == [
        {
            "id": str(post_id),
            "title": "three photos",
            "video_description": CAPTION,
            "duration": 0,
            "share_url": listed[0]["share_url"],
        }
    ]
    assert f"/photo/{post_id}" in listed[0]["share_url"]


def test_no_idempotency_two_identical_inits_are_two_posts() -> None:
    env = _env(processing_s=0.0, moderation_s=0.0)
    tt = env.creator()
    first, second = tt.video(), tt.video()
    assert first != second
    assert [p["containerId"] for p in env.ledger()] == [first, second]
    assert {p["caption"] for p in env.ledger()} == {CAPTION}
    assert len(tt.videos()["videos"]) == 2


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (INIT, video_body(title="🌸" * 1101)),  # 2,202 UTF-16 runes
        (INIT, video_body(url="ftp://cdn.example/clip.mp4")),
        (
            INIT,
            {
                "post_info": {"title": "x", "privacy_level": "SELF_ONLY"},
                "source_info": {
                    "source": "FILE_UPLOAD",
                    "video_size": 1000,
                    "chunk_size": 1000,
                    "total_chunk_count": 1,
                },
            },
        ),
        (INIT, {"post_info": {"title": "x", "privacy_level": "SELF_ONLY"}}),
        (INIT, {"post_info": {"title": 7, "privacy_level": "SELF_ONLY"}, "source_info": {}}),
        (INIT, ["not", "an", "object"]),
        (INBOX, {"source_info": {"source": "PULL_FROM_URL"}}),
        (CONTENT, photo_body(images=[f"https://cdn.example/{i}.jpg" for i in range(36)])),
        (CONTENT, photo_body(images=[])),
        (CONTENT, photo_body(cover=3)),
        (CONTENT, photo_body(title="x" * 91)),
        (CONTENT, photo_body(description="x" * 4001)),
        (CONTENT, {**photo_body(), "media_type": "VIDEO"}),
        (CONTENT, {**photo_body(), "post_mode": "DRAFT"}),
    ],
)
def test_invalid_inits_are_refused_and_post_nothing(path: str, body: Any) -> None:
    env = _env()
    tt = env.creator()
    assert tiktok_error(tt.post(path, body)) == (400, "invalid_params")
    assert env.ledger() == []


def test_a_body_that_is_not_json_is_invalid_params() -> None:
    env = _env()
    tt = env.creator()
    response = env.client.post(
        INIT, content=b"{nope", headers={"Authorization": f"Bearer {tt.token}"}
    )
    assert tiktok_error(response) == (400, "invalid_params")


def test_a_privacy_level_not_among_the_creators_options_is_refused_at_init() -> None:
    env = _env(processing_s=0.0)
    tt = env.creator(privacyLevelOptions=["SELF_ONLY"])
    for privacy in ("PUBLIC_TO_EVERYONE", None, "EVERYONE"):
        refused = tt.post(INIT, video_body(privacy=privacy))
        assert tiktok_error(refused) == (400, "privacy_level_option_mismatch")
        photos = tt.post(CONTENT, photo_body(privacy=privacy))
        assert tiktok_error(photos) == (400, "privacy_level_option_mismatch")
    assert env.ledger() == []
    assert tt.video(privacy="SELF_ONLY")
    assert len(env.ledger()) == 1


# --- Failures, the daily cap, the rate limits -------------------------------------------------


def test_a_post_can_end_failed_with_the_fail_reason() -> None:
    env = _env(rate_fail=1.0, fail_reason="spam_risk_text", processing_s=2.0)
    tt = env.creator()
    publish_id = tt.video()
    assert tt.status(publish_id) == {"status": "PROCESSING_DOWNLOAD"}
    env.clock.advance(2.0)
    assert tt.status(publish_id) == {"status": "FAILED", "fail_reason": "spam_risk_text"}
    (post,) = env.ledger()
    assert (post["status"], post["failReason"], post["externalId"]) == (
        "FAILED",
        "spam_risk_text",
        publish_id,
    )
    assert tt.videos()["videos"] == []

    # A pull failure is named after the post's media.
    env.faults(fail_reason="video_pull_failed")
    photos = tt.data(CONTENT, photo_body())["publish_id"]
    video = tt.video()
    env.clock.advance(2.0)
    assert tt.status(photos)["fail_reason"] == "photo_pull_failed"
    assert tt.status(video)["fail_reason"] == "video_pull_failed"


def test_a_video_longer_than_the_creators_maximum_fails_after_processing() -> None:
    env = _env(processing_s=1.0, video_duration_s=61.0)
    tt = env.creator(maxVideoPostDurationSec=60)
    direct = tt.video()
    draft = tt.data(INBOX, {"source_info": {"source": "PULL_FROM_URL", "video_url": VIDEO_URL}})
    env.clock.advance(1.0)
    assert tt.status(direct) == {"status": "FAILED", "fail_reason": "duration_check_failed"}
    assert tt.status(draft["publish_id"]) == {"status": "SEND_TO_USER_INBOX"}


def test_the_daily_cap_refuses_direct_posts_beyond_it_for_a_day() -> None:
    env = _env(
        daily_cap=3, processing_s=1.0, enforce_rate_limits=False, access_token_lifetime_s=2 * DAY
    )
    tt, other = env.creator(), env.creator()
    for _ in range(2):
        tt.video()
    tt.data(CONTENT, photo_body())
    refused = tt.post(INIT, video_body())
    assert tiktok_error(refused) == (403, "spam_risk_too_many_posts")
    assert tiktok_error(tt.post(CONTENT, photo_body())) == (403, "spam_risk_too_many_posts")
    assert tiktok_error(tt.post(CREATOR_INFO)) == (403, "spam_risk_too_many_posts")
    assert len(env.ledger()) == 3
    # Per creator; inbox uploads are not posts.
    assert other.video()
    inbox = {"source_info": {"source": "PULL_FROM_URL", "video_url": VIDEO_URL}}
    assert tt.data(INBOX, inbox)["publish_id"]

    env.clock.advance(DAY)
    assert tt.video()
    # A post that ended FAILED does not count.
    env.faults(rate_fail=1.0)
    tt.video()
    tt.video()
    env.clock.advance(1.0)
    env.faults(rate_fail=0.0)
    assert tt.video()
    assert tt.video()
    assert tiktok_error(tt.post(INIT, video_body())) == (403, "spam_risk_too_many_posts")


@pytest.mark.parametrize(
    ("path", "limit"),
    [(INIT, 6), (INBOX, 6), (CONTENT, 6), (STATUS, 30), (CREATOR_INFO, 20)],
)
def test_per_token_rate_limits_and_their_reset_after_a_minute(path: str, limit: int) -> None:
    env = _env(daily_cap=100)
    tt = env.creator()
    body: dict[str, Any] = {
        INIT: video_body(),
        INBOX: {"source_info": {"source": "PULL_FROM_URL", "video_url": VIDEO_URL}},
        CONTENT: photo_body(),
        CREATOR_INFO: {},
    }.get(path, {"publish_id": "v_pub_url~v2.1"})
    outcomes = []
    for _ in range(limit):
        outcomes.append(_outcome(tt.post(path, body)))
        env.clock.advance(0.5)
    assert "429 rate_limit_exceeded" not in outcomes
    posted = len(env.ledger())
    assert tiktok_error(tt.post(path, body)) == (429, "rate_limit_exceeded")
    assert len(env.ledger()) == posted  # the refused call did nothing

    # Per token: another creator (and a refreshed token) has its own count.
    assert _outcome(env.creator().post(path, body)) != "429 rate_limit_exceeded"
    tt.token = tt.refresh().json()["access_token"]
    assert _outcome(tt.post(path, body)) != "429 rate_limit_exceeded"

    # A sliding minute: the first call falls out of it a minute after it was made.
    tt.token = tt.account["accessToken"]
    env.clock.advance(60.0 - 0.5 * limit)
    assert _outcome(tt.post(path, body)) != "429 rate_limit_exceeded"
    assert tiktok_error(tt.post(path, body)) == (429, "rate_limit_exceeded")
    env.faults(enforce_rate_limits=False)
    assert _outcome(tt.post(path, body)) != "429 rate_limit_exceeded"


def test_the_video_list_and_the_token_endpoint_are_not_limited() -> None:
    tt = _env(rotate_refresh_tokens=False).creator()
    assert {_outcome(tt.post(LIST, {}, fields="id")) for _ in range(40)} == {"200 ok"}
    assert {_outcome(tt.refresh()) for _ in range(40)} == {"200 ok"}


# --- Tokens -----------------------------------------------------------------------------------


def test_missing_unknown_expired_and_unauthorized_tokens() -> None:
    env = _env(access_token_lifetime_s=3600.0)
    tt = env.creator()
    assert tiktok_error(env.client.post(CREATOR_INFO)) == (401, "access_token_invalid")
    unknown = env.client.post(CREATOR_INFO, headers={"Authorization": "Bearer act.nope"})
    assert tiktok_error(unknown) == (401, "access_token_invalid")
    assert tt.post(CREATOR_INFO).status_code == 200

    reader = env.creator(scope=["user.info.basic", "video.list"])
    assert reader.account["scope"] == "user.info.basic,video.list"
    for path, body in ((INIT, video_body()), (CREATOR_INFO, {}), (CONTENT, photo_body())):
        assert tiktok_error(reader.post(path, body)) == (401, "scope_not_authorized")
    assert reader.post(LIST, {}, fields="id").status_code == 200
    uploader = env.creator(scope=["video.upload"])
    assert tiktok_error(uploader.post(INIT, video_body())) == (401, "scope_not_authorized")
    draft = uploader.data(CONTENT, photo_body("MEDIA_UPLOAD"))["publish_id"]
    assert uploader.status(draft)["status"] == "PROCESSING_DOWNLOAD"
    assert tiktok_error(uploader.post(LIST, {}, fields="id")) == (401, "scope_not_authorized")
    assert len(env.ledger()) == 1

    env.clock.advance(3599.0)
    assert tt.post(CREATOR_INFO).status_code == 200
    env.clock.advance(1.0)
    for path, body in ((CREATOR_INFO, {}), (INIT, video_body()), (LIST, {})):
        assert tiktok_error(tt.post(path, body, fields="id")) == (401, "access_token_invalid")
    assert len(env.ledger()) == 1


def test_refresh_with_rotation_issues_a_new_pair_and_the_old_refresh_token_dies() -> None:
    env = _env(access_token_lifetime_s=3600.0)
    tt = env.creator()
    assert tt.account["expiresIn"] == 3600
    assert tt.account["refreshExpiresIn"] == 365 * 86400
    env.clock.advance(600.0)
    fresh = tt.refresh()
    assert fresh.status_code == 200
    body = fresh.json()
    assert body == {
        "access_token": body["access_token"],
        "expires_in": 3600,
        "open_id": tt.open_id,
        "refresh_expires_in": 365 * 86400,
        "refresh_token": body["refresh_token"],
        "scope": "user.info.basic,video.publish,video.upload,video.list",
        "token_type": "Bearer",
    }
    assert body["access_token"] != tt.token
    assert body["refresh_token"] != tt.refresh_token
    assert oauth_error(tt.refresh()) == (400, "invalid_grant")
    assert oauth_error(tt.refresh()) == (400, "invalid_grant")

    # The old access token lives out its own lifetime; the new one outlives it.
    env.clock.advance(3000.0)
    assert tiktok_error(tt.post(CREATOR_INFO)) == (401, "access_token_invalid")
    tt.token = body["access_token"]
    assert tt.post(CREATOR_INFO).status_code == 200
    again = tt.refresh(body["refresh_token"])
    assert again.status_code == 200
    assert oauth_error(tt.refresh(body["refresh_token"])) == (400, "invalid_grant")


def test_refresh_without_rotation_keeps_the_same_refresh_token_until_it_expires() -> None:
    env = _env(rotate_refresh_tokens=False, refresh_token_lifetime_s=10 * DAY)
    tt = env.creator()
    tokens = set()
    for _ in range(3):
        env.clock.advance(DAY)
        body = tt.refresh().json()
        assert body["refresh_token"] == tt.refresh_token
        tokens.add(body["access_token"])
    assert len(tokens) == 3
    assert body["refresh_expires_in"] == 7 * 86400
    env.clock.advance(7 * DAY)
    assert oauth_error(tt.refresh()) == (400, "invalid_grant")


@pytest.mark.parametrize(
    ("form", "error"),
    [
        ({"client_key": "k", "client_secret": "s", "refresh_token": "rft.x"}, "invalid_request"),
        (
            {"grant_type": "authorization_code", "client_key": "k", "client_secret": "s"},
            "unsupported_grant_type",
        ),
        ({"grant_type": "refresh_token", "refresh_token": "rft.x"}, "invalid_client"),
        (
            {"grant_type": "refresh_token", "client_key": "k", "client_secret": "s"},
            "invalid_request",
        ),
        (
            {
                "grant_type": "refresh_token",
                "client_key": "k",
                "client_secret": "s",
                "refresh_token": "rft.unknown",
            },
            "invalid_grant",
        ),
    ],
)
def test_refresh_errors_are_oauth_shaped(form: dict[str, str], error: str) -> None:
    client = _env().client
    assert oauth_error(client.post(TOKEN, data=form)) == (400, error)


def test_accounts_admin_endpoint() -> None:
    client = _env().client
    made = client.post("/emulator/accounts", json={"openId": "creator-1", "username": "shop"})
    assert made.status_code == 201
    body = made.json()
    assert body == {
        "openId": "creator-1",
        "username": "shop",
        "accessToken": body["accessToken"],
        "refreshToken": body["refreshToken"],
        "expiresIn": 86400,
        "refreshExpiresIn": 365 * 86400,
        "scope": "user.info.basic,video.publish,video.upload,video.list",
        "privacyLevelOptions": EVERY_LEVEL,
        "maxVideoPostDurationSec": 300,
    }
    assert body["accessToken"].startswith("act.") and body["refreshToken"].startswith("rft.")
    again = client.post(
        "/emulator/accounts", json={"openId": "creator-1", "privacyLevelOptions": ["SELF_ONLY"]}
    )
    assert again.status_code == 200
    assert again.json()["accessToken"] != body["accessToken"]
    assert (again.json()["username"], again.json()["privacyLevelOptions"]) == (
        "shop",
        ["SELF_ONLY"],
    )
    # The first token still works, and sees the change.
    info = client.post(CREATOR_INFO, headers={"Authorization": f"Bearer {body['accessToken']}"})
    assert info.json()["data"]["privacy_level_options"] == ["SELF_ONLY"]
    assert client.post("/emulator/accounts").status_code == 201
    for bad in (
        {"openId": "no spaces"},
        {"username": "x"},
        {"scope": ["video.delete"]},
        {"privacyLevelOptions": []},
        {"privacyLevelOptions": ["EVERYONE"]},
        {"maxVideoPostDurationSec": 0},
        {"user": "x"},
    ):
        assert tiktok_error(client.post("/emulator/accounts", json=bad)) == (400, "invalid_params")


# --- Lost answers and server errors -----------------------------------------------------------


def find_post_of(tt: Tt, caption: str, since: float) -> list[str]:
    """What a client can do with documented fields only: every public post, from its init
    on, whose description is the caption it sent."""
    found: list[str] = []
    body: dict[str, Any] = {"max_count": 2}
    while True:
        page = tt.videos("id,video_description,create_time", **body)
        found += [
            v["id"]
            for v in page["videos"]
            if v["video_description"] == caption and v["create_time"] >= int(since)
        ]
        if not page["has_more"]:
            return found
        body["cursor"] = page["cursor"]


def test_a_lost_init_answer_still_posts_and_the_post_is_found_in_the_video_list() -> None:
    env = _env(processing_s=1.0, moderation_s=1.0)
    tt = env.creator()
    tt.video(title="an older post")
    env.clock.advance(5.0)
    env.faults(rate_lost_init=1.0)
    sent_at = env.clock.now()
    lost = tt.post(INIT, video_body(title="the one we lost"))
    assert lost.status_code == 502
    assert "publish_id" not in lost.text and "error" not in lost.text  # it says nothing
    # It went out all the same.
    assert [p["caption"] for p in env.ledger()] == ["an older post", "the one we lost"]

    env.faults(rate_lost_init=0.0)
    env.clock.advance(1.0)
    tt.video(title="a newer post")
    env.clock.advance(5.0)
    newest = tt.videos("id,title")["videos"]
    assert [v["title"] for v in newest] == ["a newer post", "the one we lost", "an older post"]
    (match,) = find_post_of(tt, "the one we lost", sent_at)
    assert match == env.ledger()[1]["externalId"]


def test_a_lost_answer_can_be_a_cut_connection() -> None:
    env = _env(rate_lost_init=1.0, lost_response="cut", processing_s=0.0)
    tt = env.creator()
    cut = tt.post(INIT, video_body())
    # In process the cut shows as an answer shorter than it announced.
    assert len(cut.content) < int(cut.headers["content-length"])
    with pytest.raises(json.JSONDecodeError):
        cut.json()
    assert len(env.ledger()) == 1


def test_server_errors_mean_nothing_happened() -> None:
    env = _env(rate_server_error_init=1.0, processing_s=0.0)
    tt = env.creator()
    for path, body in ((INIT, video_body()), (CONTENT, photo_body())):
        assert tiktok_error(tt.post(path, body)) == (500, "internal_error")
    assert env.ledger() == []
    assert tt.post(CREATOR_INFO).status_code == 200

    env.faults(rate_server_error_init=0.0, rate_server_error=1.0)
    publish_id = tt.video()
    assert tiktok_error(tt.post(STATUS, {"publish_id": publish_id})) == (500, "internal_error")
    assert oauth_error(tt.refresh()) == (500, "server_error")
    env.faults(rate_server_error=0.0)
    # The refresh did not happen: the refresh token still works (once).
    assert tt.refresh().status_code == 200


def test_a_lost_refresh_answer_has_used_the_refresh_token_up() -> None:
    env = _env(rate_lost=1.0)
    tt = env.creator()
    assert tt.refresh().status_code == 502
    env.faults(rate_lost=0.0)
    assert oauth_error(tt.refresh()) == (400, "invalid_grant")
    assert tt.post(CREATOR_INFO).status_code == 200  # the access token lives on


def test_the_video_list_pages_newest_first() -> None:
    env = _env(processing_s=0.0, moderation_s=0.0, enforce_rate_limits=False)
    tt = env.creator()
    for i in range(5):
        tt.video(title=f"post {i}")
        env.clock.advance(1.0)
    # Two posts in one millisecond are never skipped between pages.
    tt.video(title="post 5")
    tt.video(title="post 6")
    newest_first = [f"post {i}" for i in (6, 5, 4, 3, 2, 1, 0)]

    first = tt.videos("title", max_count=2)
    assert [v["title"] for v in first["videos"]] == newest_first[:2]
    assert first["has_more"] is True
    titles = [v["title"] for v in first["videos"]]
    page = first
    while page["has_more"]:
        page = tt.videos("title", max_count=2, cursor=page["cursor"])
        titles += [v["title"] for v in page["videos"]]
    assert titles == newest_first
    assert len(tt.videos("id")["videos"]) == 7  # 10 by default
    assert tt.videos("id", max_count=3)["videos"] == tt.videos("id")["videos"][:3]
    everything = tt.videos(",".join(sorted(sandbox.tiktok.VIDEO_FIELDS)), max_count=1)
    assert set(everything["videos"][0]) == sandbox.tiktok.VIDEO_FIELDS

    for fields, body in (
        ("id", {"max_count": 21}),
        ("id", {"max_count": 0}),
        ("", {}),
        ("id,likes", {}),
    ):
        assert tiktok_error(tt.post(LIST, body, fields=fields)) == (400, "invalid_params")
    assert tiktok_error(tt.post(LIST, {})) == (400, "invalid_params")
    # Another creator's posts are not in this creator's list.
    assert env.creator().videos()["videos"] == []


def test_status_of_an_unknown_or_foreign_post_is_invalid_params() -> None:
    env = _env()
    tt, other = env.creator(), env.creator()
    publish_id = tt.video()
    for who, publish in ((other, publish_id), (tt, "v_pub_url~v2.1"), (tt, "")):
        assert tiktok_error(who.post(STATUS, {"publish_id": publish})) == (400, "invalid_params")


def test_unknown_routes_and_methods() -> None:
    client = _env().client
    assert tiktok_error(client.post("/v2/post/publish/nothing/")) == (404, "not_found")
    assert tiktok_error(client.get(INIT)) == (405, "method_not_allowed")
    assert client.get("/healthz").json() == {"status": "ok"}


def test_ledger_reset_forgets_posts_and_counts_not_creators() -> None:
    env = _env(daily_cap=1, processing_s=0.0)
    tt = env.creator()
    tt.video()
    assert tiktok_error(tt.post(INIT, video_body())) == (403, "spam_risk_too_many_posts")
    assert env.client.post("/ledger/reset").status_code == 204
    assert env.ledger() == []
    assert tt.videos()["videos"] == []
    assert tt.video()
    assert len(env.ledger()) == 1


# --- Every knob does something, and resets ----------------------------------------------------


def _slept(env: Env, step: Any) -> tuple[float, ...]:
    env.clock.slept.clear()
    step()
    return tuple(round(s, 3) for s in env.clock.slept)


def _posted(env: Env, tt: Tt) -> tuple[str, int]:
    before = len(env.ledger())
    return _outcome(tt.post(INIT, video_body())), len(env.ledger()) - before


def _status_after(env: Env, tt: Tt, seconds: float) -> tuple[str, str | None, bool]:
    """A new post's status some time after its init: (status, fail reason, public)."""
    publish_id = tt.video()
    env.clock.advance(seconds)
    data = tt.status(publish_id)
    return data["status"], data.get("fail_reason"), "publicaly_available_post_id" in data


def _inits(env: Env, tt: Tt) -> list[str]:
    body = {"source_info": {"source": "PULL_FROM_URL", "video_url": VIDEO_URL}}
    return [_outcome(tt.post(INBOX, body)) for _ in range(7)]


def _refreshes(env: Env, tt: Tt) -> list[str]:
    return [_outcome(tt.refresh()) for _ in range(2)]


def _replays(env: Env, tt: Tt) -> bool:
    """Whether a fault pattern replays once every key's sequence starts again."""

    def pattern() -> list[str]:
        return [_outcome(tt.post(LIST, {}, fields="id")) for _ in range(40)]

    first = pattern()
    env.client.post("/ledger/reset")
    return pattern() == first


def _info(tt: Tt) -> str:
    return _outcome(tt.post(CREATOR_INFO))


Probe = Any
# Per knob: the other knobs it needs on, a value other than its default, and what it changes.
PROBES: dict[str, tuple[dict[str, Any], Any, Probe]] = {
    "latency_ms": ({}, 250.0, lambda env, tt: _slept(env, lambda: _info(tt))),
    "latency_jitter_ms": ({}, 100.0, lambda env, tt: bool(_slept(env, lambda: _info(tt)))),
    "init_latency_ms": ({}, 300.0, lambda env, tt: _slept(env, lambda: _posted(env, tt))),
    "rate_limited": ({}, 1.0, lambda env, tt: _info(tt)),
    "rate_server_error": ({}, 1.0, lambda env, tt: _info(tt)),
    "rate_server_error_init": ({}, 1.0, _posted),
    "rate_lost": ({}, 1.0, lambda env, tt: _info(tt)),
    "rate_lost_init": ({}, 1.0, _posted),
    "lost_response": ({"rate_lost": 1.0}, "cut", lambda env, tt: _info(tt)),
    "processing_s": ({}, 0.5, lambda env, tt: _status_after(env, tt, 1.0)),
    "moderation_s": ({}, 0.5, lambda env, tt: _status_after(env, tt, 4.0)),
    "rate_fail": ({}, 1.0, lambda env, tt: _status_after(env, tt, 10.0)),
    "fail_reason": ({"rate_fail": 1.0}, "spam_risk", lambda env, tt: _status_after(env, tt, 10.0)),
    "video_duration_s": ({}, 301.0, lambda env, tt: _status_after(env, tt, 10.0)),
    "daily_cap": ({}, 0, _posted),
    "enforce_rate_limits": ({}, False, _inits),
    "access_token_lifetime_s": ({}, 3600.0, lambda env, tt: tt.account["expiresIn"]),
    "refresh_token_lifetime_s": ({}, 7200.0, lambda env, tt: tt.account["refreshExpiresIn"]),
    "rotate_refresh_tokens": ({}, False, _refreshes),
    "down": ({}, True, lambda env, tt: _info(tt)),
    "seed": ({"rate_limited": 0.5}, 7, _replays),
}


class TestKnobs(KnobTests):
    """Every knob is listed, has an effect, resets, and has its flag (tests/emulators.py)."""

    knobs_class = TikTokFaults
    probes = PROBES
    refusal = (400, "invalid_params")
    cli = ("tiktok", 8902, sandbox.tiktok)

    def env(self) -> Env:
        return _env()

    def account(self, env: Env) -> Tt:
        return env.creator()

    def error_of(self, response: httpx.Response) -> object:
        return tiktok_error(response)


def test_knob_constructor_validates_and_normalises() -> None:
    assert TikTokFaults(daily_cap=3.0).daily_cap == 3  # type: ignore[arg-type]
    assert TikTokFaults(processing_s=1).processing_s == 1.0
    with pytest.raises(ValueError, match="fail_reason"):
        TikTokFaults(fail_reason="bad_luck")
    with pytest.raises(ValueError, match="enforce_rate_limits"):
        TikTokFaults(enforce_rate_limits=1)  # type: ignore[arg-type]


# --- Faults reproducible per key --------------------------------------------------------------

# Every fault on.
SEEDED: dict[str, Any] = {
    **SEEDED_FAULTS,
    "rate_server_error_init": 0.15,
    "rate_lost_init": 0.3,
    "rate_fail": 0.3,
    "processing_s": 0.0,
    "moderation_s": 0.0,
}
KEYS = [f"creator-{i:02d}" for i in range(12)]


def script(open_id: str) -> Script:
    """What a retrying client does for one post of its own creator: the requests it makes,
    and their outcomes without the random parts."""
    out: list[str] = []
    account = yield {"method": "POST", "url": "/emulator/accounts", "json": {"openId": open_id}}
    headers = {"Authorization": f"Bearer {account.json()['accessToken']}"}
    publish_id = None
    for _ in range(4):
        created = yield {
            "method": "POST",
            "url": INIT,
            "json": video_body(title=f"post of {open_id}"),
            "headers": headers,
        }
        out.append(_outcome(created))
        if created.status_code == 200:
            publish_id = created.json()["data"]["publish_id"]
            break
    if publish_id is None:
        return out
    for call in ("info", "status", "status", "list", "refresh"):
        if call == "info":
            step: Step = {"method": "POST", "url": CREATOR_INFO, "headers": headers}
        elif call == "status":
            body = {"publish_id": publish_id}
            step = {"method": "POST", "url": STATUS, "json": body, "headers": headers}
        elif call == "list":
            step = {"method": "POST", "url": f"{LIST}?fields=id", "json": {}, "headers": headers}
        else:
            form = {
                "grant_type": "refresh_token",
                "client_key": "k",
                "client_secret": "s",
                "refresh_token": account.json()["refreshToken"],
            }
            step = {"method": "POST", "url": TOKEN, "data": form}
        response = yield step
        outcome = _outcome(response)
        if outcome == "200 ok" and call in ("status", "list"):
            data = response.json()["data"]
            outcome += f" {data.get('status', len(data.get('videos', [])))}"
        out.append(outcome)
    return out


class TestSeeded(SeededTests):
    """Faults reproducible per key (tests/emulators.py)."""

    seeded = SEEDED
    keys = KEYS
    seeds = (1, 2)
    every_fault = frozenset(
        {
            "ok",
            "rate_limit_exceeded",
            "internal_error",
            "not-json",
            "ok FAILED",
            "ok PUBLISH_COMPLETE",
            "ok 1",
            "server_error",
        }
    )

    def script(self, key: str) -> Script:
        return script(key)

    def app(self, **knobs: Any) -> FastAPI:
        return create_app(TikTokFaults(**knobs), FakeClock())


def test_unseeded_faults_are_random() -> None:
    def pattern() -> list[str]:
        tt = _env(rate_limited=0.5).creator()
        return [_outcome(tt.post(LIST, {}, fields="id")) for _ in range(64)]

    first = pattern()
    assert set(first) == {"200 ok", "429 rate_limit_exceeded"}
    assert pattern() != first


# --- Over real HTTP ---------------------------------------------------------------------------


@pytest.fixture
def live_emulator() -> Iterator[str]:
    with served_tiktok(processing_s=0.0, moderation_s=0.0) as emulator:
        yield emulator.url


def test_the_flow_and_a_cut_connection_over_http(live_emulator: str) -> None:
    account = httpx.post(f"{live_emulator}/emulator/accounts").json()
    headers = {"Authorization": f"Bearer {account['accessToken']}"}
    published = httpx.post(f"{live_emulator}{INIT}", json=video_body(), headers=headers)
    publish_id = published.json()["data"]["publish_id"]
    status = httpx.post(
        f"{live_emulator}{STATUS}", json={"publish_id": publish_id}, headers=headers
    )
    assert status.json()["data"]["status"] == "PUBLISH_COMPLETE"

    httpx.put(f"{live_emulator}/faults", json={"rate_lost_init": 1.0, "lost_response": "cut"})
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.post(f"{live_emulator}{INIT}", json=video_body(title="cut"), headers=headers)
    posts = httpx.get(f"{live_emulator}/ledger").json()["posts"]
    assert [p["caption"] for p in posts] == [CAPTION, "cut"]


def test_concurrent_refreshes_with_one_token_exactly_one_wins(live_emulator: str) -> None:
    httpx.put(f"{live_emulator}/faults", json={"latency_ms": 50}).raise_for_status()
    account = httpx.post(f"{live_emulator}/emulator/accounts").json()
    form = {
        "grant_type": "refresh_token",
        "client_key": "k",
        "client_secret": "s",
        "refresh_token": account["refreshToken"],
    }

    def refresh() -> httpx.Response:
        with httpx.Client(base_url=live_emulator, timeout=10) as client:
            return client.post(TOKEN, data=form)

    n = 8
    answers = all_at_once(n, refresh)
    assert sorted(a.status_code for a in answers) == [200] + [400] * (n - 1)
    assert {a.json()["error"] for a in answers if a.status_code == 400} == {"invalid_grant"}

    # Without rotation every one of them succeeds, with the same refresh token.
    httpx.put(f"{live_emulator}/faults", json={"rotate_refresh_tokens": False})
    (winner,) = (a.json() for a in answers if a.status_code == 200)
    form["refresh_token"] = winner["refresh_token"]
    answers = all_at_once(n, refresh)
    assert [a.status_code for a in answers] == [200] * n
    assert {a.json()["refresh_token"] for a in answers} == {winner["refresh_token"]}


# --- The command line -------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_the_cli_starts_the_emulator_and_healthz_answers() -> None:
    port = _free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cli",
            "emulator",
            "tiktok",
            "--port",
            str(port),
            "--daily-cap",
            "4",
            "--rotate-refresh-tokens",
            "false",
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            try:
                health = httpx.get(f"{url}/healthz", timeout=1)
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the emulator did not answer /healthz"
                time.sleep(0.1)
                continue
            break
        assert health.json() == {"status": "ok"}
        faults = httpx.get(f"{url}/faults").json()
        assert (faults["daily_cap"], faults["rotate_refresh_tokens"]) == (4, False)
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_cli_refuses_a_switch_it_cannot_read() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "cli", "emulator", "tiktok", "--enforce-rate-limits", "maybe"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "--enforce-rate-limits" in done.stderr
    assert re.search(r"expected true or false", done.stderr)
