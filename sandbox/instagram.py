"""The Instagram emulator: a stand-in for Meta's Instagram Graph API (content publishing) in
development and tests, behaving as the Graph documentation describes, not as is convenient.

It serves, with or without a version prefix (`/v21.0/...`), parameters in the query string
or in a form, multipart or JSON body, the token as `access_token` or `Authorization: Bearer`:

- `POST /{ig-user-id}/media` → `{"id": <container id>}`: an image (`image_url`), a Reel
  (`media_type=REELS`, `video_url`), a story (`media_type=STORIES`), a carousel item
  (`is_carousel_item=true`, `image_url`, or `video_url` with `media_type=VIDEO`), or a
  carousel (`media_type=CAROUSEL`, `children` = 2 to 10 item ids). Reversible: an unpublished
  container only expires.
- `GET /{container-id}?fields=status_code,status` → `IN_PROGRESS` until processed, then
  `FINISHED` (or `ERROR`), `EXPIRED` once its lifetime is over, `PUBLISHED` once published.
- `POST /{ig-user-id}/media_publish?creation_id=…` → `{"id": <media id>}`: the point of no
  return. No idempotency key, here or anywhere. Before `FINISHED`: 9007 / 2207027; expired:
  -2 / 2207020; `ERROR`: -1 / 2207032 (2207053 for a video); quota used up: 9 / 2207042.
- `GET /{ig-user-id}/media` (feed and Reels, newest first; `fields`, cursor paging with
  `limit`, `after`, `before`; time-based with `since`, `until`), `GET /{ig-user-id}/stories`
  (the last 24 h), `GET /{media-id}`, `GET /{ig-user-id}`, `GET /me`.
- `GET /{ig-user-id}/content_publishing_limit?fields=quota_usage,config`.
- `GET /refresh_access_token?grant_type=ig_refresh_token&access_token=…`.
- Graph-shaped errors `{"error": {"message", "type", "code", "error_subcode",
  "fbtrace_id"}}`, HTTP 400 as Graph answers them (500 for the unexpected error).

Emulator-only, never faulty: `POST /emulator/accounts` issues an account and its token (the
real platform does that through Instagram Login, which is out of scope); `GET /ledger` and
`POST /ledger/reset`; `GET /faults`, `PUT /faults`, `POST /faults/reset` (the knobs of
sandbox/instagram_faults.py); `GET /healthz`.

Where the documentation is silent, the choices made here:

- Which media came from which container. The IG Container node documents `id`, `status`,
  `status_code` and `copyright_check_status`, and no IG Media field names its container, so
  the emulator adds no link of its own either: a client that passes here by reading an
  emulator-only field would bind nothing against Meta. What the documentation supports: the
  container's `status_code` says whether it went out (`PUBLISHED`), and the media is then
  the one in `GET /{ig-user-id}/media` (or `/stories`) whose documented fields match what the
  client sent for that container: `caption` verbatim, `media_product_type` and `media_type`,
  a `timestamp` no earlier than the container's creation (narrowed with `since`). Never "the
  newest one". Two candidates (the same caption twice in the window) are ambiguous, and the
  emulator lets that happen, as the platform would.
- Publishing a container already `PUBLISHED`: refused by default (code 100, no subcode),
  since the documentation promises neither a refusal nor a second post; `duplicate_publish`
  = `post` makes a second public post instead. Either way the container stays `PUBLISHED`.
- A carousel is `IN_PROGRESS` while any item is, `ERROR` or `EXPIRED` if any item is; its
  items become `PUBLISHED` with it, and an item cannot be published on its own (code 100).
- An unexpected error is HTTP 500, code 2, subcode 2207001, `is_transient: true`, and nothing
  happened. A lost answer (the call took effect, or failed, but its answer never arrives) is
  a 502 whose body is not Graph JSON, or a connection cut mid-answer: it tells the client
  nothing, as on the real network.
- Tokens: a refreshed token is a new string with a new lifetime; the old one keeps working
  until its own expiry (so a refresh whose answer is lost can be retried). A token younger
  than `refresh_min_age_s` is refused with code 100, not 190: 190 would tell the client to
  reconnect the account. A call without a token gets 104; an unknown token 190; an expired
  one 190 / 463; a token of another account, 100 / 33 (the object "does not exist").
- An unknown `creation_id` is 24 / 2207008 ("media builder does not exist"). `error_subcode`
  is left out when an error has none, as Graph does.
- Captions: at most 2,200 characters, 30 hashtags and 20 @-mentions (code 100).
- Permalinks and media URLs are on `instagram.emulator.example`, never a real host.
- `POST /ledger/reset` forgets posts, containers and quota usage, not accounts or tokens.

Faults (and timings) are knobs, reproducible with a `seed` per (seed, call, key, how many
calls that key made before): the key of a container creation is the user id, media type,
caption and media URL; a container's status reads and its publishes use the key of the
creation that made it (which stands for its random id, so a run replays on a new server);
reads use the user id, and a refresh the token's user id.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import re
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any, Final, Literal
from urllib.parse import parse_qsl

import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from sandbox.instagram_faults import KNOBS, InstagramFaults
from sandbox.server import (
    CallDraws,
    Clock,
    EmulatedCalls,
    SystemClock,
    describe_validation_error,
    emulator_app,
    iso_ms,
    update_model,
)

InstagramFaultsUpdate: Final[type[BaseModel]] = update_model("InstagramFaultsUpdate", KNOBS)

MAX_CAPTION_CHARS: Final = 2200
MAX_HASHTAGS: Final = 30
MAX_MENTIONS: Final = 20
MIN_CAROUSEL_ITEMS: Final = 2
MAX_CAROUSEL_ITEMS: Final = 10
STORY_LIFETIME_S: Final = 86_400.0
DEFAULT_PAGE: Final = 25
MAX_PAGE: Final = 100
PERMALINK_HOST: Final = "https://instagram.emulator.example"
CDN_HOST: Final = "https://cdn.instagram.emulator.example"

Call = Literal["create", "status", "publish", "read", "refresh"]
# IMAGE and VIDEO are carousel items (IMAGE also a feed image); the rest are what was asked.
ContainerKind = Literal["IMAGE", "VIDEO", "REELS", "STORIES", "CAROUSEL"]
Status = Literal["IN_PROGRESS", "FINISHED", "ERROR", "EXPIRED", "PUBLISHED"]

_VERSION_PREFIX: Final = re.compile(r"^/v\d+\.\d+(?=/)")
_DIGITS: Final = re.compile(r"^\d{1,25}$")
_USERNAME: Final = re.compile(r"^[A-Za-z0-9._]{1,30}$")


# --- Graph errors -----------------------------------------------------------------------------


class GraphError(Exception):
    """An error the Graph API answers, with its documented code and subcode."""

    def __init__(
        self,
        code: int,
        message: str,
        *,
        subcode: int | None = None,
        status: int = 400,
        transient: bool | None = None,
        user_title: str | None = None,
        user_msg: str | None = None,
        kind: str = "OAuthException",
    ) -> None:
        """Build the error; `kind` is Graph's `type`."""
        super().__init__(message)
        self.code = code
        self.message = message
        self.subcode = subcode
        self.status = status
        self.transient = transient
        self.user_title = user_title
        self.user_msg = user_msg
        self.kind = kind

    def response(self) -> JSONResponse:
        """The Graph error body, with a fresh fbtrace_id."""
        error: dict[str, Any] = {"message": self.message, "type": self.kind, "code": self.code}
        if self.subcode is not None:
            error["error_subcode"] = self.subcode
        if self.transient is not None:
            error["is_transient"] = self.transient
        if self.user_title is not None:
            error["error_user_title"] = self.user_title
        if self.user_msg is not None:
            error["error_user_msg"] = self.user_msg
        error["fbtrace_id"] = secrets.token_urlsafe(17)
        headers = None
        if self.code in (104, 190):
            headers = {"WWW-Authenticate": f'OAuth "Facebook Platform" "invalid_token" "{self}"'}
        return JSONResponse(status_code=self.status, content={"error": error}, headers=headers)


def invalid_parameter(detail: str) -> GraphError:
    """Code 100: a parameter Graph refuses."""
    return GraphError(100, f"(#100) {detail}")


def no_such_object(object_id: str, method: str = "get") -> GraphError:
    """100 / 33: unknown, not this token's, or not supporting the operation."""
    return GraphError(
        100,
        f"Unsupported {method} request. Object with ID '{object_id}' does not exist, cannot "
        "be loaded due to missing permissions, or does not support this operation.",
        subcode=33,
    )


def _not_ready() -> GraphError:
    return GraphError(
        9007,
        "Media ID is not available",
        subcode=2207027,
        transient=False,
        user_title="Media not ready for publishing",
        user_msg="The media is not ready for publishing, please wait for a moment",
    )


def _container_expired() -> GraphError:
    return GraphError(
        -2,
        "The media you are trying to access has expired. Please try to upload again.",
        subcode=2207020,
        transient=False,
        user_title="Media expired",
        user_msg="Generate a new container ID and use it to try again.",
    )


_UPLOAD_FAILURES: Final[dict[int, str]] = {
    2207032: "Create media fail, please try to re-create media",
    2207053: "unknown upload error",
}


def _upload_failed(subcode: int) -> GraphError:
    return GraphError(
        -1,
        _UPLOAD_FAILURES[subcode],
        subcode=subcode,
        transient=False,
        user_title="Media upload failed",
        user_msg="Generate a new container and use it to try again.",
    )


def _quota_reached() -> GraphError:
    return GraphError(
        9,
        "Application request limit reached",
        subcode=2207042,
        transient=False,
        user_title="Publishing limit reached",
        user_msg="You reached maximum number of posts that is allowed to be published by "
        "Content Publishing API.",
    )


_RATE_LIMITS: Final[dict[int, str]] = {
    4: "(#4) Application request limit reached",
    17: "(#17) User request limit reached",
    32: "(#32) Page request limit reached",
    613: "(#613) Calls to this api have exceeded the rate limit.",
    80002: "(#80002) There have been too many calls to this Instagram account. Wait a bit "
    "and try again.",
}


def _rate_limited(code: int) -> GraphError:
    return GraphError(code, _RATE_LIMITS[code], transient=True)


def _server_error() -> GraphError:
    return GraphError(
        2,
        "An unexpected error has occurred. Please retry your request later.",
        subcode=2207001,
        status=500,
        transient=True,
    )


def _token_missing() -> GraphError:
    return GraphError(104, "An access token is required to request this resource.")


def _token_invalid() -> GraphError:
    return GraphError(190, "Invalid OAuth access token - Cannot parse access token")


def _token_expired(expired_at: float, now: float) -> GraphError:
    def when(t: float) -> str:
        return datetime.fromtimestamp(t, UTC).strftime("%A, %d-%b-%y %H:%M:%S UTC")

    return GraphError(
        190,
        f"Error validating access token: Session has expired on {when(expired_at)}. "
        f"The current time is {when(now)}.",
        subcode=463,
    )


def _unknown_field(name: str, node_type: str) -> GraphError:
    return invalid_parameter(
        f"Tried accessing nonexisting field ({name}) on node type ({node_type})"
    )


# --- What the platform holds ------------------------------------------------------------------


@dataclass
class Account:
    """An Instagram professional account."""

    user_id: str
    username: str


@dataclass(frozen=True)
class Token:
    """A long-lived user access token."""

    value: str
    user_id: str
    issued_at: float
    expires_at: float


@dataclass
class Container:
    """A media container (an IG Media builder)."""

    id: str
    user_id: str
    kind: ContainerKind
    caption: str
    url: str | None
    is_video: bool
    is_carousel_item: bool
    children: tuple[str, ...]
    created_at: float
    ready_at: float
    # Decided when the container is made: the subcode it fails with once processed, if any.
    error_subcode: int | None
    fault_key: str
    # The media that publishing it made (more than one only with duplicate_publish = post).
    media_ids: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Media:
    """A published IG Media object (a carousel's items are media too, not listed alone)."""

    id: str
    user_id: str
    username: str
    container_id: str
    kind: ContainerKind
    caption: str
    media_type: Literal["IMAGE", "VIDEO", "CAROUSEL_ALBUM"]
    product_type: Literal["FEED", "REELS", "STORY"]
    published_at: float
    shortcode: str
    children: tuple[str, ...]
    source_urls: tuple[str, ...]
    received_at: str

    @property
    def permalink(self) -> str:
        """Where the post is public."""
        if self.product_type == "REELS":
            return f"{PERMALINK_HOST}/reel/{self.shortcode}/"
        if self.product_type == "STORY":
            return f"{PERMALINK_HOST}/stories/{self.username}/{self.id}/"
        return f"{PERMALINK_HOST}/p/{self.shortcode}/"

    def ledger_entry(self) -> dict[str, Any]:
        """How GET /ledger shows the post."""
        return {
            "externalId": self.id,
            "accountId": self.user_id,
            "caption": self.caption,
            "mediaUrls": list(self.source_urls),
            "mediaType": self.kind,
            "containerId": self.container_id,
            "receivedAt": self.received_at,
        }


@dataclass(frozen=True)
class ContainerSpec:
    """What a POST /{ig-user-id}/media asks for, once validated."""

    kind: ContainerKind
    caption: str
    url: str | None
    is_video: bool
    is_carousel_item: bool
    children: tuple[str, ...]


def _graph_timestamp(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S+0000")


def _is_true(value: str | None) -> bool:
    return (value or "").strip().lower() in ("true", "1")


def _check_caption(caption: str) -> None:
    if len(caption) > MAX_CAPTION_CHARS:
        raise invalid_parameter(
            f"The caption is {len(caption)} characters; at most {MAX_CAPTION_CHARS} are allowed"
        )
    if len(re.findall(r"(?<!\w)#\w", caption)) > MAX_HASHTAGS:
        raise invalid_parameter(f"A caption may hold at most {MAX_HASHTAGS} hashtags")
    if len(re.findall(r"(?<!\w)@[\w.]", caption)) > MAX_MENTIONS:
        raise invalid_parameter(f"A caption may mention at most {MAX_MENTIONS} accounts")


def _check_url(url: str) -> str:
    if not re.match(r"^https?://[^\s/]+", url):
        raise GraphError(
            9004,
            "Only photo or video can be accepted as media type.",
            subcode=2207052,
            transient=False,
            user_title="Media download has failed. The media URI doesn't meet our requirements.",
            user_msg=f"The media could not be fetched from this URI: {url}",
        )
    return url


def container_spec(params: dict[str, str]) -> ContainerSpec:
    """Validate the parameters of a container creation as Graph does, or raise GraphError."""
    media_type = params.get("media_type", "")
    is_item = _is_true(params.get("is_carousel_item"))
    image_url = params.get("image_url") or None
    video_url = params.get("video_url") or None
    caption = params.get("caption", "")
    children_param = params.get("children")
    if children_param is not None and media_type != "CAROUSEL":
        raise invalid_parameter("children is only accepted with media_type=CAROUSEL")
    if media_type == "CAROUSEL":
        if is_item or image_url or video_url:
            raise invalid_parameter("A carousel container takes children, not a media URL")
        children = tuple(c.strip() for c in (children_param or "").split(",") if c.strip())
        if not MIN_CAROUSEL_ITEMS <= len(children) <= MAX_CAROUSEL_ITEMS:
            raise invalid_parameter(
                f"A carousel holds {MIN_CAROUSEL_ITEMS} to {MAX_CAROUSEL_ITEMS} children; "
                f"got {len(children)}"
            )
        if len(set(children)) != len(children):
            raise invalid_parameter("A carousel lists each child once")
        _check_caption(caption)
        return ContainerSpec("CAROUSEL", caption, None, False, False, children)
    if image_url and video_url:
        raise invalid_parameter("Pass either image_url or video_url, not both")
    if media_type == "REELS":
        if is_item or not video_url:
            raise invalid_parameter(
                "A Reels container needs video_url (and is not a carousel item)"
            )
        _check_caption(caption)
        return ContainerSpec("REELS", caption, _check_url(video_url), True, False, ())
    if media_type == "STORIES":
        url = image_url or video_url
        if is_item or not url:
            raise invalid_parameter("A story needs image_url or video_url")
        return ContainerSpec("STORIES", caption, _check_url(url), bool(video_url), False, ())
    if media_type == "VIDEO":
        if not is_item:
            raise invalid_parameter(
                "The VIDEO media type is no longer supported for feed posts; use REELS"
            )
        if not video_url:
            raise invalid_parameter("A video carousel item needs video_url")
        return ContainerSpec("VIDEO", "", _check_url(video_url), True, True, ())
    if media_type in ("", "IMAGE"):
        if video_url:
            raise invalid_parameter("A video needs media_type=REELS (or VIDEO for a carousel item)")
        if not image_url:
            raise invalid_parameter("The parameter image_url is required")
        if not is_item:
            _check_caption(caption)
        # A carousel item's caption is ignored: the carousel's is the post's.
        return ContainerSpec(
            "IMAGE", "" if is_item else caption, _check_url(image_url), False, is_item, ()
        )
    raise invalid_parameter(
        f"media_type must be REELS, STORIES, CAROUSEL or VIDEO; got {media_type}"
    )


def creation_key(user_id: str, params: dict[str, str]) -> str:
    """The fault key of a container creation: user, media type, caption and media URL."""
    url = params.get("image_url") or params.get("video_url") or ""
    parts = [user_id, params.get("media_type", ""), params.get("caption", ""), url]
    return json.dumps(parts, ensure_ascii=False)


class InstagramPlatform:
    """Accounts, tokens, containers and media: the platform's state and its rules.

    Every method runs under one lock, start to end, so a check and the change it allows are
    never interleaved with another call's (two media_publish of one container race here).
    """

    def __init__(self, knobs: InstagramFaults, clock: Clock) -> None:
        """An empty platform reading `knobs` live."""
        self.knobs = knobs
        self.clock = clock
        self._lock = threading.Lock()
        self._ids: set[str] = set()
        self._accounts: dict[str, Account] = {}
        self._tokens: dict[str, Token] = {}
        self._containers: dict[str, Container] = {}
        self._media: dict[str, Media] = {}
        # Top-level posts in publish order: the ledger, the media lists and the quota.
        self._posts: list[Media] = []

    # ids and tokens

    def _new_id(self, prefix: str, length: int) -> str:
        while True:
            candidate = prefix + "".join(
                str(secrets.randbelow(10)) for _ in range(length - len(prefix))
            )
            if candidate not in self._ids:
                self._ids.add(candidate)
                return candidate

    def _issue_token(self, user_id: str) -> Token:
        now = self.clock.now()
        token = Token(
            value="IGQ" + secrets.token_urlsafe(48),
            user_id=user_id,
            issued_at=now,
            expires_at=now + self.knobs.token_lifetime_s,
        )
        self._tokens[token.value] = token
        return token

    def add_account(self, user_id: str | None, username: str | None) -> tuple[Account, Token, bool]:
        """An account (new, or the existing one with this id) and a freshly issued token."""
        with self._lock:
            if user_id is not None and user_id in self._accounts:
                account = self._accounts[user_id]
                return account, self._issue_token(account.user_id), False
            if user_id is None:
                user_id = self._new_id("1784", 17)
            elif user_id in self._ids:
                raise invalid_parameter(f"{user_id} is already the id of another object")
            self._ids.add(user_id)
            account = Account(user_id, username or f"emulated_{user_id[-6:]}")
            self._accounts[user_id] = account
            return account, self._issue_token(user_id), True

    def _valid_token(self, value: str | None) -> Token:
        if not value:
            raise _token_missing()
        token = self._tokens.get(value)
        if token is None:
            raise _token_invalid()
        now = self.clock.now()
        if now >= token.expires_at:
            raise _token_expired(token.expires_at, now)
        return token

    def _account(self, token_value: str | None, user_id: str, method: str = "get") -> Account:
        token = self._valid_token(token_value)
        if token.user_id != user_id:
            raise no_such_object(user_id, method)
        return self._accounts[user_id]

    def me(self, token_value: str | None) -> Account:
        """The account a token belongs to."""
        with self._lock:
            return self._accounts[self._valid_token(token_value).user_id]

    def user_of_token(self, token_value: str | None) -> str | None:
        """The user id a token belongs to, without checking it (for fault keys)."""
        token = self._tokens.get(token_value or "")
        return token.user_id if token else None

    def refresh(self, token_value: str | None, grant_type: str | None) -> Token:
        """A new token for an unexpired one at least `refresh_min_age_s` old."""
        with self._lock:
            token = self._valid_token(token_value)
            if grant_type != "ig_refresh_token":
                raise invalid_parameter("grant_type must be ig_refresh_token")
            age = self.clock.now() - token.issued_at
            if age < self.knobs.refresh_min_age_s:
                raise invalid_parameter(
                    f"This token is {int(age)} s old; a token can be refreshed once it is "
                    f"{int(self.knobs.refresh_min_age_s)} s old"
                )
            return self._issue_token(token.user_id)

    # containers

    def fault_key_of(self, container_id: str) -> str | None:
        """The fault key of a container's status reads and publishes, if it exists."""
        container = self._containers.get(container_id)
        return container.fault_key if container else None

    def create_container(
        self,
        token_value: str | None,
        user_id: str,
        params: dict[str, str],
        error_draw: float,
        fault_key: str | None,
    ) -> Container:
        """Validate and make a container; it is processed from now on."""
        with self._lock:
            self._account(token_value, user_id, "post")
            spec = container_spec(params)
            now = self.clock.now()
            for child_id in spec.children:
                child = self._containers.get(child_id)
                if child is None or child.user_id != user_id or not child.is_carousel_item:
                    raise invalid_parameter(f"{child_id} is not a carousel item of this account")
                if child.media_ids:
                    raise invalid_parameter(f"The carousel item {child_id} is already published")
            processing = (
                self.knobs.video_processing_s if spec.is_video else self.knobs.image_processing_s
            )
            fails = error_draw < self.knobs.rate_container_error
            container_id = self._new_id("17", 17)
            container = Container(
                id=container_id,
                user_id=user_id,
                kind=spec.kind,
                caption=spec.caption,
                url=spec.url,
                is_video=spec.is_video,
                is_carousel_item=spec.is_carousel_item,
                children=spec.children,
                created_at=now,
                ready_at=now + processing,
                error_subcode=(2207053 if spec.is_video else 2207032) if fails else None,
                fault_key=fault_key or container_id,
            )
            self._containers[container_id] = container
            return container

    def _own_status(self, c: Container, now: float) -> tuple[Status, int | None]:
        if c.media_ids:
            return "PUBLISHED", None
        expired = now >= c.created_at + self.knobs.container_lifetime_s
        if now < c.ready_at:
            return ("EXPIRED" if expired else "IN_PROGRESS"), None
        if c.error_subcode is not None:
            return "ERROR", c.error_subcode
        return ("EXPIRED" if expired else "FINISHED"), None

    def _status(self, c: Container, now: float) -> tuple[Status, int | None]:
        status, subcode = self._own_status(c, now)
        if status != "FINISHED" or not c.children:
            return status, subcode
        # A carousel is only as ready as its least ready item.
        items = [self._own_status(self._containers[i], now) for i in c.children]
        for worst in ("ERROR", "EXPIRED", "IN_PROGRESS"):
            for item_status, item_subcode in items:
                if item_status == worst:
                    return worst, item_subcode
        return "FINISHED", None

    def container(
        self, token_value: str | None, container_id: str
    ) -> tuple[Container, Status, int | None]:
        """A container of the token's account, with its status now."""
        with self._lock:
            c = self._containers[container_id]
            self._account(token_value, c.user_id)
            return (c, *self._status(c, self.clock.now()))

    def is_container(self, node_id: str) -> bool:
        """Whether a node id names a container."""
        return node_id in self._containers

    # publishing

    def quota_usage(self, user_id: str, now: float) -> int:
        """Posts published in the quota's moving window (a carousel counts as one)."""
        since = now - self.knobs.quota_duration_s
        return sum(1 for m in self._posts if m.user_id == user_id and m.published_at > since)

    def publish(self, token_value: str | None, user_id: str, creation_id: str | None) -> Media:
        """The point of no return: make a container's media public."""
        with self._lock:
            account = self._account(token_value, user_id, "post")
            if not creation_id:
                raise invalid_parameter("The parameter creation_id is required")
            c = self._containers.get(creation_id)
            if c is None or c.user_id != user_id:
                raise GraphError(
                    24,
                    f"The media builder with creation id = {creation_id} does not exist or "
                    "has been expired.",
                    subcode=2207008,
                    transient=False,
                )
            if c.is_carousel_item:
                raise invalid_parameter("A carousel item is published through its carousel")
            now = self.clock.now()
            status, subcode = self._status(c, now)
            if status == "PUBLISHED" and self.knobs.duplicate_publish == "refuse":
                raise invalid_parameter(f"The container {c.id} has already been published")
            if status == "IN_PROGRESS":
                raise _not_ready()
            if status == "EXPIRED":
                raise _container_expired()
            if status == "ERROR":
                raise _upload_failed(subcode or 2207032)
            if any(self._containers[i].media_ids for i in c.children) and not c.media_ids:
                raise invalid_parameter("A carousel item of this container is already published")
            if self.quota_usage(user_id, now) >= self.knobs.quota_total:
                raise _quota_reached()
            return self._make_media(c, account, now)

    def _make_media(self, c: Container, account: Account, now: float) -> Media:
        items: list[Media] = []
        for item_id in c.children:
            item = self._containers[item_id]
            media = self._new_media(item, account, now, "", ())
            item.media_ids.append(media.id)
            items.append(media)
        media = self._new_media(c, account, now, c.caption, tuple(m.id for m in items))
        c.media_ids.append(media.id)
        self._posts.append(media)
        return media

    def _new_media(
        self,
        c: Container,
        account: Account,
        now: float,
        caption: str,
        children: tuple[str, ...],
    ) -> Media:
        media_type: Literal["IMAGE", "VIDEO", "CAROUSEL_ALBUM"] = (
            "CAROUSEL_ALBUM" if c.kind == "CAROUSEL" else "VIDEO" if c.is_video else "IMAGE"
        )
        product: Literal["FEED", "REELS", "STORY"] = (
            "REELS" if c.kind == "REELS" else "STORY" if c.kind == "STORIES" else "FEED"
        )
        urls = tuple(self._containers[i].url or "" for i in c.children) or (c.url or "",)
        media = Media(
            id=self._new_id("17", 17),
            user_id=account.user_id,
            username=account.username,
            container_id=c.id,
            kind=c.kind,
            caption=caption,
            media_type=media_type,
            product_type=product,
            published_at=now,
            shortcode=secrets.token_urlsafe(8)[:11],
            children=children,
            source_urls=urls,
            received_at=iso_ms(now),
        )
        self._media[media.id] = media
        return media

    # reading

    def account(self, token_value: str | None, user_id: str) -> Account:
        """The account a path names, if the token is its own."""
        with self._lock:
            return self._account(token_value, user_id)

    def media(self, token_value: str | None, media_id: str) -> Media:
        """One media object of the token's account."""
        with self._lock:
            media = self._media[media_id]
            self._account(token_value, media.user_id)
            return media

    def media_by_id(self, media_id: str) -> Media:
        """A media object, already authorised through its parent."""
        return self._media[media_id]

    def is_media(self, node_id: str) -> bool:
        """Whether a node id names a media object."""
        return node_id in self._media

    def published(self, token_value: str | None, user_id: str, *, stories: bool) -> list[Media]:
        """An account's feed and Reels (or its live stories), newest first."""
        with self._lock:
            self._account(token_value, user_id)
            now = self.clock.now()
            out = [
                m
                for m in self._posts
                if m.user_id == user_id
                and (m.product_type == "STORY") == stories
                and (not stories or m.published_at > now - STORY_LIFETIME_S)
            ]
        out.reverse()
        return out

    def publishing_limit(self, token_value: str | None, user_id: str) -> int:
        """An account's quota usage now."""
        with self._lock:
            self._account(token_value, user_id)
            return self.quota_usage(user_id, self.clock.now())

    def media_count(self, user_id: str) -> int:
        """How many posts an account has in its feed."""
        return sum(1 for m in self._posts if m.user_id == user_id and m.product_type != "STORY")

    # the emulator's own

    def ledger(self) -> list[dict[str, Any]]:
        """Every public post, in the order they went out."""
        with self._lock:
            return [m.ledger_entry() for m in self._posts]

    def reset(self) -> None:
        """Forget posts, media, containers and quota usage; keep accounts and tokens."""
        with self._lock:
            self._ids = set(self._accounts)
            self._containers.clear()
            self._media.clear()
            self._posts.clear()


# --- Request parsing and rendering ------------------------------------------------------------


def _body_params(content_type: str, body: bytes) -> dict[str, str]:
    if content_type.startswith("application/x-www-form-urlencoded"):
        return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
    if content_type.startswith("application/json"):
        try:
            data = json.loads(body)
        except ValueError:
            raise invalid_parameter("The request body is not valid JSON") from None
        if not isinstance(data, dict):
            raise invalid_parameter("The request body must be a JSON object")
        out: dict[str, str] = {}
        for name, value in data.items():
            if isinstance(value, str):
                out[name] = value
            elif isinstance(value, list):
                out[name] = ",".join(str(v) for v in value)
            else:
                out[name] = json.dumps(value)
        return out
    if content_type.startswith("multipart/form-data"):
        message = BytesParser(policy=policy.HTTP).parsebytes(
            b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body
        )
        parts: dict[str, str] = {}
        if isinstance(message, EmailMessage) and message.is_multipart():
            for part in message.iter_parts():
                name = part.get_param("name", header="content-disposition")
                if isinstance(name, str):
                    payload = part.get_payload(decode=True)
                    if isinstance(payload, bytes):
                        parts[name] = payload.decode("utf-8", "replace")
        return parts
    raise invalid_parameter(f"Unsupported content type {content_type or '(none)'}")


async def graph_params(request: Request) -> dict[str, str]:
    """The call's parameters: the query string, then the body (which wins), as Graph takes."""
    params = dict(request.query_params)
    body = await request.body()
    if body:
        params.update(_body_params(request.headers.get("content-type", ""), body))
    return params


def access_token(request: Request, params: dict[str, str]) -> str | None:
    """The token of a call: the access_token parameter, or an Authorization header."""
    if params.get("access_token"):
        return params["access_token"]
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() in ("bearer", "oauth") and value.strip():
        return value.strip()
    return None


Fields = list[tuple[str, "Fields | None"]]


def parse_fields(raw: str | None, default: str = "id") -> Fields:
    """Graph's field selection: `id,caption,children{id,media_type}`."""
    text = (raw or default).replace(" ", "")
    out: Fields = []
    i = 0
    while i < len(text):
        match = re.match(r"[a-z_]+", text[i:])
        if not match:
            raise invalid_parameter(f"Syntax error in fields near {text[i:]!r}")
        name = match.group(0)
        i += len(name)
        sub: Fields | None = None
        if i < len(text) and text[i] == "{":
            depth, j = 1, i + 1
            while j < len(text) and depth:
                depth += {"{": 1, "}": -1}.get(text[j], 0)
                j += 1
            if depth:
                raise invalid_parameter("Syntax error in fields: unbalanced braces")
            sub = parse_fields(text[i + 1 : j - 1])
            i = j
        out.append((name, sub))
        if i < len(text):
            if text[i] != ",":
                raise invalid_parameter(f"Syntax error in fields near {text[i:]!r}")
            i += 1
    return out


def _media_fields(platform: InstagramPlatform, media: Media, fields: Fields) -> dict[str, Any]:
    out: dict[str, Any] = {}
    extension = "mp4" if media.media_type == "VIDEO" else "jpg"
    for name, sub in fields:
        if name == "id":
            out["id"] = media.id
        elif name == "caption":
            if media.caption:
                out["caption"] = media.caption
        elif name == "media_type":
            out["media_type"] = media.media_type
        elif name == "media_product_type":
            out["media_product_type"] = media.product_type
        elif name == "timestamp":
            out["timestamp"] = _graph_timestamp(media.published_at)
        elif name == "permalink":
            out["permalink"] = media.permalink
        elif name == "shortcode":
            out["shortcode"] = media.shortcode
        elif name == "username":
            out["username"] = media.username
        elif name == "owner":
            out["owner"] = {"id": media.user_id}
        elif name == "media_url":
            if media.media_type != "CAROUSEL_ALBUM":
                out["media_url"] = f"{CDN_HOST}/{media.id}.{extension}"
        elif name == "thumbnail_url":
            if media.media_type == "VIDEO":
                out["thumbnail_url"] = f"{CDN_HOST}/{media.id}.jpg"
        elif name in ("like_count", "comments_count"):
            out[name] = 0
        elif name == "is_comment_enabled":
            out[name] = True
        elif name == "children":
            if media.children:
                out["children"] = {
                    "data": [
                        _media_fields(platform, platform.media_by_id(child), sub or [("id", None)])
                        for child in media.children
                    ]
                }
        else:
            raise _unknown_field(name, "ShadowIGMedia")
    return out


_CONTAINER_STATUS_TEXT: Final[dict[str, str]] = {
    "IN_PROGRESS": "In Progress: Media is still being processed.",
    "FINISHED": "Finished: Media has been uploaded and it is ready to be published.",
    "PUBLISHED": "Published: Media has been successfully published.",
    "EXPIRED": "Expired: Media was not published within 24 hours.",
}


def _container_fields(
    c: Container, status: Status, subcode: int | None, fields: Fields
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, _ in fields:
        if name == "id":
            out["id"] = c.id
        elif name == "status_code":
            out["status_code"] = status
        elif name == "status":
            out["status"] = (
                f"Error: Media upload has failed with error code {subcode}"
                if status == "ERROR"
                else _CONTAINER_STATUS_TEXT[status]
            )
        elif name == "copyright_check_status":
            done = status in ("FINISHED", "PUBLISHED") and c.is_video
            out[name] = {"status": "completed" if done else "not_started", "matches_found": False}
        else:
            raise _unknown_field(name, "ShadowIGMediaBuilder")
    # Graph answers a node's id whichever fields were asked for.
    out.setdefault("id", c.id)
    return out


def _user_fields(platform: InstagramPlatform, account: Account, fields: Fields) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, _ in fields:
        if name in ("id", "user_id"):
            out[name] = account.user_id
        elif name == "username":
            out["username"] = account.username
        elif name == "account_type":
            out["account_type"] = "BUSINESS"
        elif name == "media_count":
            out["media_count"] = platform.media_count(account.user_id)
        else:
            raise _unknown_field(name, "ShadowIGUser")
    out.setdefault("id", account.user_id)
    return out


def _cursor(media_id: str) -> str:
    return base64.urlsafe_b64encode(media_id.encode()).decode().rstrip("=")


def _uncursor(cursor: str) -> str:
    try:
        return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise invalid_parameter(f"Invalid cursor {cursor!r}") from None


def _int_param(params: dict[str, str], name: str) -> int | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise invalid_parameter(f"The parameter {name} must be an integer") from None


def page_of(
    platform: InstagramPlatform, items: list[Media], params: dict[str, str], request: Request
) -> dict[str, Any]:
    """One page of an edge: `fields`, `limit`, cursors (`after`, `before`), `since`/`until`."""
    fields = parse_fields(params.get("fields"))
    limit = min(max(_int_param(params, "limit") or DEFAULT_PAGE, 1), MAX_PAGE)
    since, until = _int_param(params, "since"), _int_param(params, "until")
    items = [
        m
        for m in items
        if (since is None or m.published_at >= since) and (until is None or m.published_at <= until)
    ]
    ids = [m.id for m in items]
    if params.get("after"):
        anchor = _uncursor(params["after"])
        start = ids.index(anchor) + 1 if anchor in ids else len(ids)
    elif params.get("before"):
        anchor = _uncursor(params["before"])
        start = max(0, (ids.index(anchor) if anchor in ids else 0) - limit)
    else:
        start = 0
    page = items[start : start + limit]
    out: dict[str, Any] = {"data": [_media_fields(platform, m, fields) for m in page]}
    if page:
        base = request.url.remove_query_params(["after", "before"])
        paging: dict[str, Any] = {
            "cursors": {"before": _cursor(page[0].id), "after": _cursor(page[-1].id)}
        }
        if start + limit < len(items):
            paging["next"] = str(base.include_query_params(after=_cursor(page[-1].id)))
        if start > 0:
            paging["previous"] = str(base.include_query_params(before=_cursor(page[0].id)))
        out["paging"] = paging
    return out


# --- Routing ----------------------------------------------------------------------------------


class _VersionPrefix:
    """Route `/v21.0/...` as `/...`, keeping the prefix in the URLs the emulator writes."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            root = scope.get("root_path", "")
            match = _VERSION_PREFIX.match(scope["path"][len(root) :])
            if match:
                scope = {**scope, "root_path": root + match.group(0)}
        await self.app(scope, receive, send)


class AccountRequest(BaseModel):
    """Body of POST /emulator/accounts."""

    model_config = ConfigDict(extra="forbid")

    user_id: str | None = Field(default=None, alias="userId", pattern=_DIGITS.pattern)
    username: str | None = Field(default=None, pattern=_USERNAME.pattern)


# --- The app ----------------------------------------------------------------------------------


def create_app(faults: InstagramFaults | None = None, clock: Clock | None = None) -> FastAPI:
    """Build a fresh emulator with its own platform state, knobs and draw counters."""
    live = dataclasses.replace(faults) if faults is not None else InstagramFaults()
    time_source: Clock = clock or SystemClock()
    platform = InstagramPlatform(live, time_source)
    calls = EmulatedCalls(time_source)
    app = emulator_app(
        "Instagram emulator",
        live,
        platform,
        calls,
        InstagramFaultsUpdate,
        invalid=lambda message: invalid_parameter(message).response(),
    )
    app.add_middleware(_VersionPrefix)

    async def graph_call(
        call: Call, key: str, action: Callable[[CallDraws, int | None], dict[str, Any]]
    ) -> Response:
        def answer(values: CallDraws, index: int | None) -> Response:
            try:
                return JSONResponse(action(values, index))
            except GraphError as exc:
                return exc.response()

        return await calls.call(
            live,
            call,
            key,
            point_of_no_return="publish" if call == "publish" else None,
            limited=lambda: _rate_limited(live.rate_limit_code).response(),
            server_error=lambda: _server_error().response(),
            answer=answer,
        )

    @app.exception_handler(GraphError)
    async def _graph_error(_: Request, exc: GraphError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return invalid_parameter(describe_validation_error(exc)).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 405:
            return no_such_object(request.url.path.strip("/"), request.method.lower()).response()
        return GraphError(2500, f"Unknown path components: {request.url.path}").response()

    # --- the emulator's own endpoints (registered first: `/{node_id}` would match them; the
    # ledger, fault and health routes are already in, from emulator_app)

    @app.post("/emulator/accounts", status_code=201)
    async def create_account(body: AccountRequest | None = None) -> JSONResponse:
        """Emulator-only: make an account (or take the one with this `userId`) and issue it
        a long-lived token, as Instagram Login would. 201 for a new account, 200 for a known
        one (with a new token)."""
        request = body or AccountRequest()
        account, token, created = platform.add_account(request.user_id, request.username)
        return JSONResponse(
            status_code=201 if created else 200,
            content={
                "userId": account.user_id,
                "username": account.username,
                "accessToken": token.value,
                "expiresIn": int(token.expires_at - token.issued_at),
            },
        )

    # --- Graph

    @app.get("/refresh_access_token")
    async def refresh_access_token(request: Request) -> Response:
        """A new long-lived token for one at least 24 h old and not expired."""
        params = await graph_params(request)
        token = access_token(request, params)
        key = platform.user_of_token(token) or (token or "")

        def action(_: CallDraws, __: int | None) -> dict[str, Any]:
            fresh = platform.refresh(token, params.get("grant_type"))
            return {
                "access_token": fresh.value,
                "token_type": "bearer",
                "expires_in": int(fresh.expires_at - fresh.issued_at),
            }

        return await graph_call("refresh", key, action)

    @app.get("/me")
    async def me(request: Request) -> Response:
        """The account of the token."""
        params = await graph_params(request)
        token = access_token(request, params)
        fields = parse_fields(params.get("fields"))
        return await graph_call(
            "read",
            platform.user_of_token(token) or "",
            lambda _, __: _user_fields(platform, platform.me(token), fields),
        )

    @app.post("/{user_id}/media")
    async def create_container(user_id: str, request: Request) -> Response:
        """Create a media container; it is IN_PROGRESS until processed."""
        params = await graph_params(request)
        token = access_token(request, params)
        key = creation_key(user_id, params)

        def action(values: CallDraws, index: int | None) -> dict[str, Any]:
            fault_key = f"{key}#{index}" if index is not None else None
            container = platform.create_container(token, user_id, params, values.outcome, fault_key)
            return {"id": container.id}

        return await graph_call("create", key, action)

    @app.post("/{user_id}/media_publish")
    async def media_publish(user_id: str, request: Request) -> Response:
        """Publish a FINISHED container: the point of no return, with no idempotency key."""
        params = await graph_params(request)
        token = access_token(request, params)
        creation_id = params.get("creation_id")
        key = platform.fault_key_of(creation_id or "") or (creation_id or "")
        return await graph_call(
            "publish",
            key,
            lambda _, __: {"id": platform.publish(token, user_id, creation_id).id},
        )

    @app.get("/{user_id}/media")
    async def list_media(user_id: str, request: Request) -> Response:
        """The account's feed posts and Reels, newest first (stories are on /stories)."""
        params = await graph_params(request)
        token = access_token(request, params)
        return await graph_call(
            "read",
            user_id,
            lambda _, __: page_of(
                platform, platform.published(token, user_id, stories=False), params, request
            ),
        )

    @app.get("/{user_id}/stories")
    async def list_stories(user_id: str, request: Request) -> Response:
        """The account's stories of the last 24 hours, newest first."""
        params = await graph_params(request)
        token = access_token(request, params)
        return await graph_call(
            "read",
            user_id,
            lambda _, __: page_of(
                platform, platform.published(token, user_id, stories=True), params, request
            ),
        )

    @app.get("/{user_id}/content_publishing_limit")
    async def content_publishing_limit(user_id: str, request: Request) -> Response:
        """Posts published in the moving quota window, and the quota."""
        params = await graph_params(request)
        token = access_token(request, params)
        fields = parse_fields(params.get("fields"), default="quota_usage")

        def action(_: CallDraws, __: int | None) -> dict[str, Any]:
            usage = platform.publishing_limit(token, user_id)
            entry: dict[str, Any] = {}
            for name, _sub in fields:
                if name == "quota_usage":
                    entry["quota_usage"] = usage
                elif name == "config":
                    entry["config"] = {
                        "quota_total": live.quota_total,
                        "quota_duration": int(live.quota_duration_s),
                    }
                else:
                    raise _unknown_field(name, "ShadowIGUserContentPublishingLimit")
            return {"data": [entry]}

        return await graph_call("read", user_id, action)

    @app.get("/{node_id}")
    async def get_node(node_id: str, request: Request) -> Response:
        """A container (its status), a media object or an account, by id."""
        params = await graph_params(request)
        token = access_token(request, params)
        fields = parse_fields(params.get("fields"))
        if platform.is_container(node_id):

            def status(_: CallDraws, __: int | None) -> dict[str, Any]:
                c, code, subcode = platform.container(token, node_id)
                return _container_fields(c, code, subcode, fields)

            return await graph_call("status", platform.fault_key_of(node_id) or node_id, status)

        def read(_: CallDraws, __: int | None) -> dict[str, Any]:
            if platform.is_media(node_id):
                return _media_fields(platform, platform.media(token, node_id), fields)
            return _user_fields(platform, platform.account(token, node_id), fields)

        return await graph_call("read", node_id, read)

    return app


def serve(host: str, port: int, faults: InstagramFaults) -> None:
    """Run the Instagram emulator with uvicorn in this process until interrupted."""
    uvicorn.run(create_app(faults), host=host, port=port, log_level="warning")
