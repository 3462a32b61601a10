"""Tests for the Instagram emulator (sandbox/instagram.py): the publishing flow as the Graph
documentation describes it, its knobs, and faults reproducible per key."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

import sandbox.instagram
from harness.stack import ROOT
from sandbox.instagram import create_app
from sandbox.instagram_faults import KNOBS, InstagramFaults
from tests.emulators import (
    SEEDED_FAULTS,
    FakeClock,
    KnobTests,
    Script,
    SeededTests,
    Step,
    all_at_once,
    served_instagram,
)

DAY = 86_400.0
# Newlines, emoji, a hashtag, a mention, markup and trailing space: stored verbatim.
CAPTION = "Spring 🌸 drop\n\nLine two — #new @friend <b>&amp;</b> "


@dataclass
class Env:
    """An emulator app in process, with its fake clock."""

    client: TestClient
    clock: FakeClock = field(default_factory=FakeClock)

    def account(self, user_id: str | None = None) -> Ig:
        return Ig(self.client, user_id)

    def faults(self, **knobs: Any) -> None:
        response = self.client.put("/faults", json=knobs)
        assert response.status_code == 200, response.text

    def ledger(self) -> list[dict[str, Any]]:
        posts: list[dict[str, Any]] = self.client.get("/ledger").json()["posts"]
        return posts


def _env(**knobs: Any) -> Env:
    clock = FakeClock()
    return Env(TestClient(create_app(InstagramFaults(**knobs), clock)), clock)


class Ig:
    """One emulated account, and the Graph calls a client makes for it."""

    def __init__(self, client: TestClient, user_id: str | None = None) -> None:
        self.client = client
        body = {"userId": user_id} if user_id else {}
        created = client.post("/emulator/accounts", json=body)
        assert created.status_code in (200, 201), created.text
        self.user_id: str = created.json()["userId"]
        self.token: str = created.json()["accessToken"]

    def call(self, method: str, path: str, **params: Any) -> httpx.Response:
        response: httpx.Response = self.client.request(
            method, path, params={**params, "access_token": self.token}
        )
        return response

    def create(self, **params: Any) -> httpx.Response:
        # Form-encoded, as the documentation's examples send it.
        response: httpx.Response = self.client.post(
            f"/{self.user_id}/media", data={**params, "access_token": self.token}
        )
        return response

    def container(self, **params: Any) -> str:
        response = self.create(**params)
        assert response.status_code == 200, response.text
        container_id: str = response.json()["id"]
        return container_id

    def image(self, caption: str = CAPTION, url: str = "https://cdn.example/a.jpg") -> str:
        return self.container(image_url=url, caption=caption)

    def status(self, container_id: str) -> str:
        body = self.call("GET", f"/{container_id}", fields="status_code").json()
        assert body["id"] == container_id
        status: str = body["status_code"]
        return status

    def publish(self, container_id: str) -> httpx.Response:
        return self.call("POST", f"/{self.user_id}/media_publish", creation_id=container_id)

    def media_list(self, **params: Any) -> dict[str, Any]:
        body: dict[str, Any] = self.call("GET", f"/{self.user_id}/media", **params).json()
        return body

    def usage(self) -> dict[str, Any]:
        entry: dict[str, Any] = self.call(
            "GET", f"/{self.user_id}/content_publishing_limit", fields="quota_usage,config"
        ).json()["data"][0]
        return entry


def graph_error(response: httpx.Response) -> tuple[int, int, int | None]:
    """(HTTP status, code, subcode) of a Graph error, after checking its shape."""
    error = response.json()["error"]
    assert {"message", "type", "code", "fbtrace_id"} <= set(error), error
    assert isinstance(error["message"], str) and error["message"]
    return response.status_code, error["code"], error.get("error_subcode")


# --- The happy flows --------------------------------------------------------------------------


def test_image_flow_ends_in_the_ledger_with_the_caption_verbatim() -> None:
    env = _env()
    ig = env.account()
    container = ig.image()
    assert ig.status(container) == "IN_PROGRESS"

    env.clock.advance(0.2)
    assert ig.status(container) == "FINISHED"
    published = ig.publish(container)
    assert published.status_code == 200
    media_id = published.json()["id"]
    assert media_id != container
    assert ig.status(container) == "PUBLISHED"

    (post,) = env.ledger()
    assert post == {
        "externalId": media_id,
        "accountId": ig.user_id,
        "caption": CAPTION,
        "mediaUrls": ["https://cdn.example/a.jpg"],
        "mediaType": "IMAGE",
        "containerId": container,
        "receivedAt": post["receivedAt"],
    }
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", post["receivedAt"])
    listed = ig.media_list(fields="id,caption,media_type,media_product_type,timestamp,permalink")
    assert listed["data"] == [
        {
            "id": media_id,
            "caption": CAPTION,
            "media_type": "IMAGE",
            "media_product_type": "FEED",
            "timestamp": "2025-06-15T15:06:40+0000",
            "permalink": listed["data"][0]["permalink"],
        }
    ]
    assert listed["data"][0]["permalink"].startswith("https://instagram.emulator.example/p/")


def test_publish_before_finished_is_refused_and_posts_nothing() -> None:
    env = _env()
    ig = env.account()
    container = ig.image()
    refused = ig.publish(container)
    assert graph_error(refused) == (400, 9007, 2207027)
    assert refused.json()["error"]["message"] == "Media ID is not available"
    assert env.ledger() == []
    assert ig.status(container) == "IN_PROGRESS"


def test_reels_flow() -> None:
    env = _env()
    ig = env.account()
    container = ig.container(
        media_type="REELS", video_url="https://cdn.example/v.mp4", caption="a reel"
    )
    env.clock.advance(0.5)
    assert ig.status(container) == "IN_PROGRESS"
    assert graph_error(ig.publish(container)) == (400, 9007, 2207027)
    env.clock.advance(0.5)
    assert ig.status(container) == "FINISHED"
    media_id = ig.publish(container).json()["id"]

    (post,) = env.ledger()
    assert (post["mediaType"], post["caption"], post["mediaUrls"]) == (
        "REELS",
        "a reel",
        ["https://cdn.example/v.mp4"],
    )
    node = ig.call("GET", f"/{media_id}", fields="media_type,media_product_type,permalink").json()
    assert node["media_type"] == "VIDEO"
    assert node["media_product_type"] == "REELS"
    assert "/reel/" in node["permalink"]


def test_carousel_flow_with_image_and_video_children() -> None:
    env = _env()
    ig = env.account()
    urls = ["https://cdn.example/1.jpg", "https://cdn.example/2.jpg", "https://cdn.example/3.mp4"]
    children = [
        ig.container(image_url=urls[0], is_carousel_item="true"),
        ig.container(image_url=urls[1], is_carousel_item="true"),
        ig.container(video_url=urls[2], media_type="VIDEO", is_carousel_item="true"),
    ]
    carousel = ig.container(media_type="CAROUSEL", children=",".join(children), caption=CAPTION)
    env.clock.advance(0.2)
    # Ready only once its slowest item (the video) is.
    assert [ig.status(c) for c in children] == ["FINISHED", "FINISHED", "IN_PROGRESS"]
    assert ig.status(carousel) == "IN_PROGRESS"
    assert graph_error(ig.publish(carousel)) == (400, 9007, 2207027)
    env.clock.advance(0.8)
    assert ig.status(carousel) == "FINISHED"

    album = ig.publish(carousel).json()["id"]
    assert [ig.status(c) for c in [carousel, *children]] == ["PUBLISHED"] * 4
    (post,) = env.ledger()
    assert (post["externalId"], post["mediaType"], post["caption"], post["mediaUrls"]) == (
        album,
        "CAROUSEL",
        CAPTION,
        urls,
    )
    (listed,) = ig.media_list(fields="id,media_type,children{media_type}")["data"]
    assert listed["id"] == album
    assert listed["media_type"] == "CAROUSEL_ALBUM"
    assert [c["media_type"] for c in listed["children"]["data"]] == ["IMAGE", "IMAGE", "VIDEO"]
    # A carousel counts as one post against the quota.
    assert ig.usage()["quota_usage"] == 1


def test_a_story_is_listed_on_stories_for_a_day_not_on_media() -> None:
    env = _env()
    ig = env.account()
    story = ig.container(media_type="STORIES", image_url="https://cdn.example/s.jpg")
    env.clock.advance(0.2)
    media_id = ig.publish(story).json()["id"]
    assert env.ledger()[0]["mediaType"] == "STORIES"
    assert ig.media_list()["data"] == []
    stories = ig.call("GET", f"/{ig.user_id}/stories", fields="id,media_product_type").json()
    assert stories["data"] == [{"id": media_id, "media_product_type": "STORY"}]
    env.clock.advance(DAY)
    assert ig.call("GET", f"/{ig.user_id}/stories").json() == {"data": []}


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"media_type": "REELS", "image_url": "https://cdn.example/a.jpg"}, 100),
        ({"video_url": "https://cdn.example/v.mp4"}, 100),
        ({"media_type": "VIDEO", "video_url": "https://cdn.example/v.mp4"}, 100),
        ({"image_url": "https://a.example/a.jpg", "video_url": "https://a.example/v.mp4"}, 100),
        ({"media_type": "GIF", "image_url": "https://cdn.example/a.jpg"}, 100),
        ({}, 100),
        ({"image_url": "https://cdn.example/a.jpg", "caption": "x" * 2201}, 100),
        ({"image_url": "https://cdn.example/a.jpg", "caption": "#a " * 31}, 100),
        ({"image_url": "https://cdn.example/a.jpg", "caption": "@a " * 21}, 100),
        ({"image_url": "ftp://cdn.example/a.jpg"}, 9004),
        ({"media_type": "CAROUSEL", "children": "1,2,3"}, 100),
    ],
)
def test_invalid_containers_are_refused(params: dict[str, str], code: int) -> None:
    ig = _env().account()
    response = ig.create(**params)
    assert graph_error(response)[:2] == (400, code)


def test_carousel_rules() -> None:
    env = _env()
    ig, other = env.account(), env.account()
    items = [
        ig.container(image_url=f"https://cdn.example/{i}.jpg", is_carousel_item="true")
        for i in range(11)
    ]
    feed_image = ig.image()
    foreign = other.container(image_url="https://cdn.example/o.jpg", is_carousel_item="true")

    def carousel(children: list[str]) -> httpx.Response:
        return ig.create(media_type="CAROUSEL", children=",".join(children))

    for children in ([items[0]], items, [items[0], feed_image], [items[0], foreign]):
        assert graph_error(carousel(children))[:2] == (400, 100)
    assert carousel(items[:10]).status_code == 200
    env.clock.advance(0.2)
    # An item goes out with its carousel, never alone.
    assert graph_error(ig.publish(items[0]))[:2] == (400, 100)
    assert graph_error(ig.publish("17000000000000000")) == (400, 24, 2207008)
    assert env.ledger() == []


def test_error_containers() -> None:
    env = _env(rate_container_error=1.0)
    ig = env.account()
    image = ig.image()
    video = ig.container(media_type="REELS", video_url="https://cdn.example/v.mp4")
    assert ig.status(image) == "IN_PROGRESS"
    env.clock.advance(1.0)
    assert (ig.status(image), ig.status(video)) == ("ERROR", "ERROR")
    body = ig.call("GET", f"/{video}", fields="status_code,status").json()
    assert "2207053" in body["status"]
    assert graph_error(ig.publish(image)) == (400, -1, 2207032)
    assert graph_error(ig.publish(video)) == (400, -1, 2207053)
    assert env.ledger() == []


def test_an_unpublished_container_expires_after_its_lifetime() -> None:
    env = _env()
    ig = env.account()
    container = ig.image()
    env.clock.advance(DAY - 1)
    assert ig.status(container) == "FINISHED"
    env.clock.advance(1)
    assert ig.status(container) == "EXPIRED"
    assert graph_error(ig.publish(container)) == (400, -2, 2207020)
    assert env.ledger() == []


def test_duplicate_publish_is_refused_by_default() -> None:
    env = _env()
    ig = env.account()
    container = ig.image()
    env.clock.advance(1)
    first = ig.publish(container)
    assert first.status_code == 200
    again = ig.publish(container)
    assert graph_error(again) == (400, 100, None)
    assert len(env.ledger()) == 1
    assert ig.status(container) == "PUBLISHED"


def test_duplicate_publish_can_make_a_second_public_post() -> None:
    env = _env(duplicate_publish="post")
    ig = env.account()
    container = ig.image()
    env.clock.advance(1)
    first, second = ig.publish(container).json()["id"], ig.publish(container).json()["id"]
    assert first != second
    posts = env.ledger()
    assert [p["externalId"] for p in posts] == [first, second]
    assert {p["containerId"] for p in posts} == {container}
    assert ig.status(container) == "PUBLISHED"
    assert ig.usage()["quota_usage"] == 2


def test_quota_refuses_the_post_beyond_it_and_the_window_moves() -> None:
    env = _env(quota_total=3)
    ig = env.account()
    assert ig.usage() == {"quota_usage": 0, "config": {"quota_total": 3, "quota_duration": 86400}}
    containers = [ig.image(caption=f"post {i}") for i in range(4)]
    env.clock.advance(1)
    for n, container in enumerate(containers[:3], start=1):
        assert ig.publish(container).status_code == 200
        assert ig.usage()["quota_usage"] == n
    refused = ig.publish(containers[3])
    assert graph_error(refused) == (400, 9, 2207042)
    assert len(env.ledger()) == 3
    assert ig.status(containers[3]) == "FINISHED"
    # Without `fields`, Graph answers the usage alone.
    default = ig.call("GET", f"/{ig.user_id}/content_publishing_limit").json()
    assert default == {"data": [{"quota_usage": 3}]}

    env.clock.advance(DAY)
    assert ig.usage()["quota_usage"] == 0
    env.faults(container_lifetime_s=2 * DAY)
    assert ig.publish(containers[3]).status_code == 200


def test_the_quota_is_per_account() -> None:
    env = _env(quota_total=1)
    one, two = env.account(), env.account()
    a, b = one.image(), two.image()
    env.clock.advance(1)
    assert one.publish(a).status_code == 200
    assert two.publish(b).status_code == 200


# --- Tokens -----------------------------------------------------------------------------------


def test_missing_unknown_expired_and_foreign_tokens() -> None:
    env = _env()
    ig, other = env.account(), env.account()
    path = f"/{ig.user_id}/media"

    assert graph_error(env.client.get(path)) == (400, 104, None)
    unknown = env.client.get(path, params={"access_token": "IGQnope"})
    assert graph_error(unknown) == (400, 190, None)
    assert unknown.headers["WWW-Authenticate"].startswith('OAuth "Facebook Platform"')
    assert graph_error(other.call("GET", path)) == (400, 100, 33)
    foreign = other.call("POST", f"/{ig.user_id}/media_publish", creation_id="17000000000000000")
    assert graph_error(foreign) == (400, 100, 33)
    assert ig.call("GET", path).status_code == 200
    bearer = env.client.get(path, headers={"Authorization": f"Bearer {ig.token}"})
    assert bearer.status_code == 200

    env.clock.advance(60 * DAY)
    for response in (ig.call("GET", path), ig.create(image_url="https://cdn.example/a.jpg")):
        assert graph_error(response) == (400, 190, 463)


def test_refresh_extends_a_token_at_least_a_day_old() -> None:
    env = _env()
    ig = env.account()

    def refresh(token: str, grant_type: str = "ig_refresh_token") -> httpx.Response:
        response: httpx.Response = env.client.get(
            "/refresh_access_token", params={"grant_type": grant_type, "access_token": token}
        )
        return response

    assert graph_error(refresh(ig.token))[:2] == (400, 100)  # too young
    env.clock.advance(DAY)
    assert graph_error(refresh(ig.token, "refresh_token"))[:2] == (400, 100)
    fresh = refresh(ig.token)
    assert fresh.status_code == 200
    body = fresh.json()
    assert body == {
        "access_token": body["access_token"],
        "token_type": "bearer",
        "expires_in": 60 * 86400,
    }
    assert body["access_token"] != ig.token

    # The old token lives out its own lifetime; the new one outlives it.
    env.clock.advance(59 * DAY - 1)
    assert ig.call("GET", f"/{ig.user_id}/media").status_code == 200
    env.clock.advance(1)
    assert graph_error(ig.call("GET", f"/{ig.user_id}/media")) == (400, 190, 463)
    assert graph_error(refresh(ig.token)) == (400, 190, 463)
    ig.token = body["access_token"]
    assert ig.call("GET", f"/{ig.user_id}/media").status_code == 200
    assert graph_error(refresh("IGQnope"))[:2] == (400, 190)


def test_accounts_admin_endpoint() -> None:
    client = _env().client
    made = client.post(
        "/emulator/accounts", json={"userId": "17841400000000001", "username": "shop"}
    )
    assert made.status_code == 201
    assert made.json() == {
        "userId": "17841400000000001",
        "username": "shop",
        "accessToken": made.json()["accessToken"],
        "expiresIn": 5184000,
    }
    again = client.post("/emulator/accounts", json={"userId": "17841400000000001"})
    assert again.status_code == 200
    assert again.json()["accessToken"] != made.json()["accessToken"]
    assert client.post("/emulator/accounts").status_code == 201
    for bad in ({"userId": "abc"}, {"username": "no spaces"}, {"user": "x"}):
        assert graph_error(client.post("/emulator/accounts", json=bad))[:2] == (400, 100)
    me = client.get(
        "/me", params={"fields": "user_id,username", "access_token": again.json()["accessToken"]}
    )
    assert me.json() == {
        "user_id": "17841400000000001",
        "username": "shop",
        "id": "17841400000000001",
    }


# --- Finding the media of a container --------------------------------------------------------


def find_media_of(ig: Ig, caption: str, product_type: str, since: float) -> list[str]:
    """What a client can do with documented fields only: every media, from the container's
    creation on, whose caption and product type are the ones it sent."""
    found: list[str] = []
    page = ig.media_list(
        fields="id,caption,media_product_type,timestamp", since=int(since), limit=2
    )
    while True:
        found += [
            m["id"]
            for m in page["data"]
            if m.get("caption", "") == caption and m["media_product_type"] == product_type
        ]
        if "next" not in page.get("paging", {}):
            return found
        page = ig.client.get(page["paging"]["next"]).json()


def test_a_lost_publish_answer_is_reconciled_through_the_container() -> None:
    env = _env(rate_lost_publish=1.0)
    ig = env.account()
    older = ig.image(caption="an older post")
    env.clock.advance(1)
    env.faults(rate_lost_publish=0.0)
    ig.publish(older)
    created_at = env.clock.now()
    ours = ig.image(caption="the one we lost")
    env.clock.advance(1)
    env.faults(rate_lost_publish=1.0)

    lost = ig.publish(ours)
    assert lost.status_code == 502
    assert "error" not in lost.text  # it says nothing: not even that it failed
    # It went out all the same, and the container says so.
    assert [p["containerId"] for p in env.ledger()] == [older, ours]
    assert ig.status(ours) == "PUBLISHED"

    env.faults(rate_lost_publish=0.0)
    newer_container = ig.image(caption="a newer post", url="https://cdn.example/n.jpg")
    env.clock.advance(1)
    newer = ig.publish(newer_container)
    assert newer.status_code == 200
    listed = ig.media_list()["data"]
    assert listed[0]["id"] == newer.json()["id"]  # "the newest one" would be wrong
    (match,) = find_media_of(ig, "the one we lost", "FEED", created_at)
    assert match == env.ledger()[1]["externalId"]


def test_a_repeated_caption_is_ambiguous_as_on_the_platform() -> None:
    env = _env()
    ig = env.account()
    since = env.clock.now()
    first, second = ig.image(caption="same"), ig.image(caption="same")
    env.clock.advance(1)
    ig.publish(first)
    ig.publish(second)
    assert len(find_media_of(ig, "same", "FEED", since)) == 2


def test_media_list_pages_newest_first_with_cursors_and_fields() -> None:
    env = _env()
    ig = env.account()
    ids = []
    for i in range(5):
        container = ig.image(caption=f"post {i}")
        env.clock.advance(1)
        ids.append(ig.publish(container).json()["id"])
    newest_first = list(reversed(ids))

    first = ig.media_list(limit=2)
    assert first["data"] == [{"id": i} for i in newest_first[:2]]
    assert "previous" not in first["paging"]
    second = ig.media_list(limit=2, after=first["paging"]["cursors"]["after"])
    assert [m["id"] for m in second["data"]] == newest_first[2:4]
    assert "previous" in second["paging"]
    back = ig.media_list(limit=2, before=second["paging"]["cursors"]["before"])
    assert [m["id"] for m in back["data"]] == newest_first[:2]
    last = env.client.get(second["paging"]["next"]).json()
    assert [m["id"] for m in last["data"]] == newest_first[4:]
    assert "next" not in last["paging"]

    node = ig.call("GET", f"/{ids[0]}", fields="id,caption,owner,username").json()
    assert node == {
        "id": ids[0],
        "caption": "post 0",
        "owner": {"id": ig.user_id},
        "username": node["username"],
    }
    assert graph_error(ig.call("GET", f"/{ids[0]}", fields="container_id"))[:2] == (400, 100)
    assert graph_error(ig.call("GET", f"/{ig.user_id}/media", fields="id{"))[:2] == (400, 100)


def test_graph_calls_as_clients_send_them() -> None:
    env = _env(image_processing_s=0.0)
    ig = env.account()
    path = f"/v21.0/{ig.user_id}/media"
    as_json = env.client.post(
        path, json={"image_url": "https://cdn.example/j.jpg", "access_token": ig.token}
    )
    multipart = env.client.post(
        path,
        files={"image_url": (None, "https://cdn.example/m.jpg"), "access_token": (None, ig.token)},
    )
    in_query = env.client.post(
        path, params={"image_url": "https://cdn.example/q.jpg", "access_token": ig.token}
    )
    ids = [r.json()["id"] for r in (as_json, multipart, in_query)]
    for container in ids:
        published = env.client.post(
            f"/v19.0/{ig.user_id}/media_publish",
            json={"creation_id": container},
            headers={"Authorization": f"OAuth {ig.token}"},
        )
        assert published.status_code == 200
    assert [p["mediaUrls"][0][-5:] for p in env.ledger()] == ["j.jpg", "m.jpg", "q.jpg"]
    assert graph_error(env.client.get("/v21.0/nowhere/at/all"))[:2] == (400, 2500)
    assert graph_error(env.client.delete(f"/{ig.user_id}/media"))[:2] == (400, 100)


def test_ledger_reset_forgets_posts_not_accounts() -> None:
    env = _env(image_processing_s=0.0)
    ig = env.account()
    container = ig.image()
    ig.publish(container)
    assert env.client.post("/ledger/reset").status_code == 204
    assert env.ledger() == []
    assert ig.usage()["quota_usage"] == 0
    assert ig.media_list() == {"data": []}
    assert ig.status(ig.image()) == "FINISHED"
    assert env.client.get("/healthz").json() == {"status": "ok"}


# --- Every knob does something, and resets ----------------------------------------------------


def _read(ig: Ig) -> httpx.Response:
    return ig.call("GET", f"/{ig.user_id}/media")


def _outcome(response: httpx.Response) -> str:
    """A response without its random parts (ids, trace ids)."""
    try:
        body = response.json()
    except ValueError:
        return f"{response.status_code} not-json"
    if "error" in body:
        return (
            f"{response.status_code} {body['error']['code']}/{body['error'].get('error_subcode')}"
        )
    return f"{response.status_code} ok"


def _slept(env: Env, step: Callable[[], object]) -> tuple[float, ...]:
    env.clock.slept.clear()
    step()
    return tuple(round(s, 3) for s in env.clock.slept)


def _published(env: Env, ig: Ig) -> tuple[str, int]:
    container = ig.image()
    env.clock.advance(1)
    before = len(env.ledger())
    return _outcome(ig.publish(container)), len(env.ledger()) - before


def _status_after(env: Env, ig: Ig, seconds: float, **params: str) -> str:
    container = ig.container(**params) if params else ig.image()
    env.clock.advance(seconds)
    return ig.status(container)


def _quota_after(env: Env, ig: Ig) -> int:
    container = ig.image()
    env.clock.advance(1)
    ig.publish(container)
    env.clock.advance(100)
    usage: int = ig.usage()["quota_usage"]
    return usage


def _refresh_now(env: Env, ig: Ig) -> str:
    return _outcome(
        env.client.get(
            "/refresh_access_token",
            params={"grant_type": "ig_refresh_token", "access_token": ig.token},
        )
    )


def _replays(env: Env, ig: Ig) -> bool:
    """Whether a fault pattern replays once every key's sequence starts again."""

    def pattern() -> list[str]:
        return [_outcome(_read(ig)) for _ in range(40)]

    first = pattern()
    env.client.post("/ledger/reset")
    return pattern() == first


def _duplicate(env: Env, ig: Ig) -> tuple[str, str]:
    container = ig.image()
    env.clock.advance(1)
    return _outcome(ig.publish(container)), _outcome(ig.publish(container))


REEL = {"media_type": "REELS", "video_url": "https://cdn.example/v.mp4"}
Probe = Callable[[Env, Ig], object]
# Per knob: the other knobs it needs on, a value other than its default, and what it changes.
PROBES: dict[str, tuple[dict[str, Any], Any, Probe]] = {
    "latency_ms": ({}, 250.0, lambda env, ig: _slept(env, lambda: _read(ig))),
    "latency_jitter_ms": ({}, 100.0, lambda env, ig: bool(_slept(env, lambda: _read(ig)))),
    "publish_latency_ms": ({}, 300.0, lambda env, ig: _slept(env, lambda: _published(env, ig))),
    "rate_limited": ({}, 1.0, lambda env, ig: _outcome(_read(ig))),
    "rate_limit_code": ({"rate_limited": 1.0}, 613, lambda env, ig: _outcome(_read(ig))),
    "rate_server_error": ({}, 1.0, lambda env, ig: _outcome(_read(ig))),
    "rate_server_error_publish": ({}, 1.0, _published),
    "rate_lost": ({}, 1.0, lambda env, ig: _outcome(_read(ig))),
    "rate_lost_publish": ({}, 1.0, _published),
    "lost_response": ({"rate_lost": 1.0}, "cut", lambda env, ig: _outcome(_read(ig))),
    "rate_container_error": ({}, 1.0, lambda env, ig: _status_after(env, ig, 1)),
    "image_processing_s": ({}, 5.0, lambda env, ig: _status_after(env, ig, 0.2)),
    "video_processing_s": ({}, 5.0, lambda env, ig: _status_after(env, ig, 1, **REEL)),
    "container_lifetime_s": ({}, 50.0, lambda env, ig: _status_after(env, ig, 100)),
    "duplicate_publish": ({}, "post", _duplicate),
    "quota_total": ({}, 0, _published),
    "quota_duration_s": ({}, 50.0, _quota_after),
    "token_lifetime_s": (
        {},
        3600.0,
        lambda env, ig: env.client.post("/emulator/accounts").json()["expiresIn"],
    ),
    "refresh_min_age_s": ({}, 0.0, _refresh_now),
    "down": ({}, True, lambda env, ig: _outcome(_read(ig))),
    "seed": ({"rate_limited": 0.5}, 7, _replays),
}


class TestKnobs(KnobTests):
    """Every knob is listed, has an effect, resets, and has its flag (tests/emulators.py)."""

    knobs_class = InstagramFaults
    probes = PROBES
    refusal = (400, 100)
    cli = ("instagram", 8901, sandbox.instagram)

    def env(self) -> Env:
        return _env()

    def account(self, env: Env) -> Ig:
        return env.account()

    def error_of(self, response: httpx.Response) -> object:
        return graph_error(response)[:2]


def test_knob_constructor_validates_and_normalises() -> None:
    assert InstagramFaults(quota_total=3.0).quota_total == 3  # type: ignore[arg-type]
    assert InstagramFaults(image_processing_s=1).image_processing_s == 1.0
    with pytest.raises(ValueError, match="rate_limit_code"):
        InstagramFaults(rate_limit_code=5)
    with pytest.raises(ValueError, match="quota_total"):
        InstagramFaults(quota_total=True)


def test_a_lost_answer_can_be_a_cut_connection() -> None:
    env = _env(rate_lost_publish=1.0, lost_response="cut", image_processing_s=0.0)
    ig = env.account()
    container = ig.image()
    cut = ig.publish(container)
    # In process the cut shows as an answer shorter than it announced.
    assert len(cut.content) < int(cut.headers["content-length"])
    with pytest.raises(json.JSONDecodeError):
        cut.json()
    assert ig.status(container) == "PUBLISHED"
    assert len(env.ledger()) == 1


# --- Faults reproducible per key --------------------------------------------------------------

# Every fault on.
SEEDED: dict[str, Any] = {
    **SEEDED_FAULTS,
    "rate_server_error_publish": 0.15,
    "rate_lost_publish": 0.3,
    "rate_container_error": 0.2,
    "image_processing_s": 0.0,
}
KEYS = [f"{17841400000000000 + i}" for i in range(12)]


def script(user_id: str) -> Script:
    """What a retrying client does for one post of its own account: the requests it makes,
    and their outcomes without the random parts."""
    out: list[str] = []
    account = yield {"method": "POST", "url": "/emulator/accounts", "json": {"userId": user_id}}
    token = account.json()["accessToken"]
    container = None
    for _ in range(4):
        created = yield {
            "method": "POST",
            "url": f"/{user_id}/media",
            "data": {
                "image_url": "https://cdn.example/a.jpg",
                "caption": f"post of {user_id}",
                "access_token": token,
            },
        }
        out.append(_outcome(created))
        if created.status_code == 200:
            container = created.json()["id"]
            break
    if container is None:
        return out
    for call in ("status", "publish", "status", "publish", "status", "list"):
        if call == "publish":
            step: Step = {
                "method": "POST",
                "url": f"/{user_id}/media_publish",
                "params": {"creation_id": container, "access_token": token},
            }
        elif call == "status":
            step = {
                "method": "GET",
                "url": f"/{container}",
                "params": {"fields": "status_code", "access_token": token},
            }
        else:
            step = {"method": "GET", "url": f"/{user_id}/media", "params": {"access_token": token}}
        response = yield step
        outcome = _outcome(response)
        if outcome == "200 ok" and call != "publish":
            body = response.json()
            outcome += f" {body.get('status_code', len(body.get('data', [])))}"
        out.append(outcome)
    return out


class TestSeeded(SeededTests):
    """Faults reproducible per key (tests/emulators.py)."""

    seeded = SEEDED
    keys = KEYS
    seeds = (11, 12)
    every_fault = frozenset(
        {
            "ok",
            "4/None",
            "2/2207001",
            "not-json",
            "-1/2207032",
            "100/None",
        }
    )

    def script(self, key: str) -> Script:
        return script(key)

    def app(self, **knobs: Any) -> FastAPI:
        return create_app(InstagramFaults(**knobs), FakeClock())


def test_unseeded_faults_are_random() -> None:
    def pattern() -> list[str]:
        env = _env(rate_limited=0.5)
        ig = env.account()
        return [_outcome(_read(ig)) for _ in range(64)]

    first = pattern()
    assert set(first) == {"200 ok", "400 4/None"}
    assert pattern() != first


# --- Over real HTTP ---------------------------------------------------------------------------


@contextmanager
def _live(**knobs: Any) -> Iterator[str]:
    with served_instagram(**knobs) as served:
        yield served.url


@pytest.fixture
def live_emulator() -> Iterator[str]:
    with _live(image_processing_s=0.0) as url:
        yield url


def test_a_cut_connection_over_http_still_publishes(live_emulator: str) -> None:
    httpx.put(f"{live_emulator}/faults", json={"rate_lost_publish": 1.0, "lost_response": "cut"})
    account = httpx.post(f"{live_emulator}/emulator/accounts").json()
    user, token = account["userId"], account["accessToken"]
    container = httpx.post(
        f"{live_emulator}/v21.0/{user}/media",
        data={"image_url": "https://cdn.example/a.jpg", "access_token": token},
    ).json()["id"]
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.post(
            f"{live_emulator}/v21.0/{user}/media_publish",
            data={"creation_id": container, "access_token": token},
        )
    status = httpx.get(
        f"{live_emulator}/{container}", params={"fields": "status_code", "access_token": token}
    )
    assert status.json()["status_code"] == "PUBLISHED"
    assert len(httpx.get(f"{live_emulator}/ledger").json()["posts"]) == 1


def test_concurrent_publishes_of_one_container_make_one_post(live_emulator: str) -> None:
    httpx.put(f"{live_emulator}/faults", json={"latency_ms": 50}).raise_for_status()
    account = httpx.post(f"{live_emulator}/emulator/accounts").json()
    user, token = account["userId"], account["accessToken"]
    container = httpx.post(
        f"{live_emulator}/{user}/media",
        data={"image_url": "https://cdn.example/a.jpg", "access_token": token},
    ).json()["id"]
    n = 10

    def publish() -> int:
        with httpx.Client(base_url=live_emulator, timeout=10) as client:
            response = client.post(
                f"/{user}/media_publish", data={"creation_id": container, "access_token": token}
            )
        return response.status_code

    assert sorted(all_at_once(n, publish)) == [200] + [400] * (n - 1)
    assert len(httpx.get(f"{live_emulator}/ledger").json()["posts"]) == 1


# --- The command line and the README ----------------------------------------------------------


def test_cli_help_lists_every_flag() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "cli", "emulator", "instagram", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert {k.flag for k in KNOBS} <= set(re.findall(r"--[a-z0-9-]+", done.stdout))


def test_readme_lists_every_knob() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## The Instagram emulator", 1)[1].split("\n## ", 1)[0]
    assert set(re.findall(r"`([a-z0-9_]+)`", section)) >= {knob.name for knob in KNOBS}
    assert "publisher emulator instagram" in section
    assert "/emulator/accounts" in section
