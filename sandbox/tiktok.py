"""The TikTok emulator: a stand-in for TikTok's Content Posting API (and the Display API's video
list, and the OAuth token refresh) in development and tests, behaving as TikTok documents it,
not as is convenient.

It serves, JSON bodies and `Authorization: Bearer <access token>` unless said otherwise, every
answer `{"data": {...}, "error": {"code": "ok" | <code>, "message", "log_id"}}`:

- `POST /v2/post/publish/creator_info/query/` (scope `video.publish`, 20 a minute per token)
  → the creator's username, nickname, avatar, `privacy_level_options`, `comment_disabled`,
  `duet_disabled`, `stitch_disabled`, `max_video_post_duration_sec`.
- `POST /v2/post/publish/video/init/` (scope `video.publish`, 6 a minute per token): a direct
  post, `{post_info: {title, privacy_level, disable_duet, disable_comment, disable_stitch,
  video_cover_timestamp_ms}, source_info: {source: "PULL_FROM_URL", video_url}}` →
  `{publish_id}`. The point of no return: from here TikTok fetches and posts on its own.
- `POST /v2/post/publish/inbox/video/init/` (scope `video.upload`, 6 a minute): `{source_info}`
  only; it ends `SEND_TO_USER_INBOX` (a draft the creator finishes in the app).
- `POST /v2/post/publish/content/init/` (6 a minute): photos, `{post_info: {title,
  description, privacy_level, disable_comment, auto_add_music}, source_info: {source:
  "PULL_FROM_URL", photo_images (1 to 35 URLs), photo_cover_index}, post_mode: "DIRECT_POST"
  (scope `video.publish`) | "MEDIA_UPLOAD" (scope `video.upload`, to the inbox), media_type:
  "PHOTO"}`.
- `POST /v2/post/publish/status/fetch/` `{publish_id}` (scope `video.upload` or
  `video.publish`, 30 a minute) → `{status: PROCESSING_DOWNLOAD | SEND_TO_USER_INBOX |
  PUBLISH_COMPLETE | FAILED, fail_reason (when FAILED), publicaly_available_post_id (TikTok's
  spelling: once the public post passed moderation)}`.
- `POST /v2/video/list/?fields=id,title,…` `{max_count (1 to 20, default 10), cursor}` (scope
  `video.list`) → `{videos, cursor, has_more}`: the creator's public posts, newest first.
- `POST /v2/oauth/token/`, a form `grant_type=refresh_token&refresh_token=…&client_key=…&
  client_secret=…` → `{access_token, expires_in, open_id, refresh_expires_in, refresh_token,
  scope, token_type: "Bearer"}`; its errors are OAuth-shaped, `{error, error_description,
  log_id}`, HTTP 400 (`invalid_request`, `invalid_client`, `unsupported_grant_type`,
  `invalid_grant`).
- Errors with their documented HTTP statuses: `access_token_invalid` 401 (missing, unknown or
  expired token), `scope_not_authorized` 401, `rate_limit_exceeded` 429, `invalid_params` 400,
  `privacy_level_option_mismatch` 400, `spam_risk_too_many_posts` 403, `internal_error` 500.
  No idempotency key anywhere: two inits of the same content are two posts.

Emulator-only, never faulty: `POST /emulator/accounts` `{openId?, username?, nickname?,
scope?, privacyLevelOptions?, maxVideoPostDurationSec?}` issues a creator (or takes the one
with this `openId`, updating what the body names) and a token pair, as TikTok's Login Kit
would (out of scope): 201 new, 200 known; `GET /ledger` and `POST /ledger/reset`; `GET
/faults`, `PUT /faults`, `POST /faults/reset` (the knobs of sandbox/tiktok_faults.py); `GET
/healthz`.

Where the documentation is silent, the choices made here:

- Only `PULL_FROM_URL` is emulated. An init with `FILE_UPLOAD` is refused, 400
  `invalid_params` ("FILE_UPLOAD is not emulated"), so no `upload_url` is ever answered and
  `PROCESSING_UPLOAD` never shows. The URLs are never fetched: any http(s) URL is taken as
  verified and fetchable (so `url_ownership_unverified` and the pull failures happen only
  through `rate_fail` and `fail_reason`), and every video is `video_duration_s` long.
- Timing: a post is `PROCESSING_DOWNLOAD` for `processing_s` after its init, then ends
  `PUBLISH_COMPLETE`, `SEND_TO_USER_INBOX` (inbox) or `FAILED`. The timings, and whether it
  fails and why, are fixed at its init: changing a knob later changes only later posts.
- A failure shows at the end of processing. Drawn with `rate_fail`, its reason is
  `fail_reason`, a pull failure named after the post's media (`video_pull_failed` on photos
  is `photo_pull_failed`, and the other way round). A direct video post longer than the
  creator's `max_video_post_duration_sec` (default 300) ends FAILED, `duration_check_failed`
  (TikTok learns the duration only once it has the video); inbox drafts are not checked.
- `publicaly_available_post_id` (a list of one int64) appears `moderation_s` after
  `PUBLISH_COMPLETE`, and only for a post made `PUBLIC_TO_EVERYONE`: TikTok gives no id for a
  post that is not publicly available (private or friends-only posts complete without one,
  and so do inbox drafts). The key is left out while there is no id. `uploaded_bytes` and
  `downloaded_bytes` are never answered (nothing is fetched).
- The video list holds exactly the posts with a public id (public, moderated), photos too
  (`duration` 0): a private post cannot be found there, as on TikTok. `title` is the title
  sent; `video_description` is the title for a video (a video's title is its caption) and
  the description for photos; `create_time` is when the post completed (Unix seconds, never
  before its init). The `cursor` is a Unix time in milliseconds, as TikTok documents: a page
  holds the posts that completed strictly before it, and the answer's cursor is the last
  post's. Two posts of one creator never share a millisecond, so no page skips one.
  `max_count` over 20 (or under 1) is refused, `invalid_params`; so is a missing or unknown
  field in `fields`.
- Privacy: `privacy_level` missing or not among the creator's options is refused at init,
  400 `privacy_level_option_mismatch`; inbox uploads take none. Titles are counted in UTF-16
  code units, as TikTok documents: a video title up to 2,200, a photo title up to 90, a photo
  description up to 4,000, else `invalid_params`.
- The daily cap (`daily_cap`, 15): direct posts (videos and photos) inited by the creator in
  the last 24 h that have not ended FAILED. Once reached, an init is refused, 403
  `spam_risk_too_many_posts`, and so is `creator_info/query` (TikTok's cue to stop before
  the init). Inbox uploads do not count, and TikTok's cap on pending inbox shares is not
  emulated.
- Rate limits (`enforce_rate_limits`): per access token and per endpoint (each init endpoint
  its own 6), over a sliding minute; a call counts once it gets past its token and scope
  checks, whether or not its body is then refused, and a call refused 429 does not count. A
  refreshed token starts its own count. The 429 carries no Retry-After (none is documented).
  The video list and the token endpoint are not limited.
- The order of checks on a call: its token, its scope, the rate limit, then the body.
  `client_key` and `client_secret` must be present but are not checked against a registry
  (the emulator has no apps). The `grant_type` is checked first, then the client, then the
  refresh token.
- Tokens: a refresh answers a new access token; the old one keeps working until its own
  expiry. With `rotate_refresh_tokens` (on by default: refresh tokens are single use) the
  refresh token is new each time, with a fresh lifetime, and the used one is refused from
  then on, `invalid_grant`; of two concurrent refreshes with one token exactly one wins.
  Off, the same refresh token is answered again and keeps working until its own expiry
  (`refresh_expires_in` counts down). An unknown, expired or used refresh token is
  `invalid_grant`.
- A server error (500 `internal_error`, or on the token endpoint an OAuth `server_error`)
  means nothing happened. A lost answer (the call took effect, or failed, but its answer
  never arrives) is a 502 whose body is not TikTok JSON, or a connection cut mid-answer: it
  tells the client nothing. A lost refresh answer with rotation on has used up the refresh
  token all the same.
- An unknown route is 404, `{"error": {"code": "not_found"}}`; another method, 405.
- Share and media URLs are on `tiktok.emulator.example`, never a real host.
- `GET /ledger` lists every post TikTok took on (inited), in init order, with its status now
  (`PROCESSING_DOWNLOAD`, `PUBLISH_COMPLETE`, `SEND_TO_USER_INBOX` or `FAILED`); `caption` is
  the title verbatim for a video and the description verbatim for photos (both are also
  given as `title` and `description`); `externalId` is the public post id once there is
  one, else the publish id (also `containerId`); `receivedAt` is the init's time.
- `POST /ledger/reset` forgets posts, the daily cap's count and the rate limits' windows,
  not creators or tokens.

Faults (and timings) are knobs, reproducible with a `seed` per (seed, call, key, how many
calls that key made before): an init's key is its creator, endpoint, title, description and
media URLs; a post's status reads use the key of the init that made it (which stands for its
random publish id, so a run replays on a new server); creator info and the video list use
the creator, and a refresh the creator of its refresh token.
"""

from __future__ import annotations

import dataclasses
import json
import re
import secrets
import threading
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal, TypeVar, get_args
from urllib.parse import parse_qsl

import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

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
from sandbox.tiktok_faults import DAY_S, KNOBS, TikTokFaults

TikTokFaultsUpdate: Final[type[BaseModel]] = update_model("TikTokFaultsUpdate", KNOBS)

PrivacyLevel = Literal[
    "PUBLIC_TO_EVERYONE", "MUTUAL_FOLLOW_FRIENDS", "FOLLOWER_OF_CREATOR", "SELF_ONLY"
]
Scope = Literal["user.info.basic", "video.publish", "video.upload", "video.list"]
PRIVACY_LEVELS: Final[tuple[str, ...]] = get_args(PrivacyLevel)
PUBLIC: Final = "PUBLIC_TO_EVERYONE"
SCOPES: Final[tuple[str, ...]] = get_args(Scope)
MAX_VIDEO_TITLE: Final = 2200
MAX_PHOTO_TITLE: Final = 90
MAX_PHOTO_DESCRIPTION: Final = 4000
MAX_PHOTOS: Final = 35
DEFAULT_LIST_COUNT: Final = 10
MAX_LIST_COUNT: Final = 20
DEFAULT_MAX_DURATION_S: Final = 300
RATE_WINDOW_S: Final = 60.0
SHARE_HOST: Final = "https://www.tiktok.emulator.example"
CDN_HOST: Final = "https://p16.tiktok.emulator.example"

Call = Literal[
    "creator_info", "video_init", "inbox_init", "content_init", "status", "list", "refresh"
]
INIT_CALLS: Final[frozenset[str]] = frozenset({"video_init", "inbox_init", "content_init"})
# The documented per-token limits, a minute each.
RATE_LIMITS: Final[dict[str, int]] = {
    "creator_info": 20,
    "video_init": 6,
    "inbox_init": 6,
    "content_init": 6,
    "status": 30,
}
Status = Literal["PROCESSING_DOWNLOAD", "SEND_TO_USER_INBOX", "PUBLISH_COMPLETE", "FAILED"]
MediaType = Literal["VIDEO", "PHOTO"]

VIDEO_FIELDS: Final = frozenset(
    {
        "id",
        "title",
        "video_description",
        "create_time",
        "share_url",
        "duration",
        "cover_image_url",
        "embed_link",
        "height",
        "width",
        "like_count",
        "comment_count",
        "share_count",
        "view_count",
    }
)

_OPEN_ID: Final = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_USERNAME: Final = re.compile(r"^[A-Za-z0-9._]{2,24}$")
_URL: Final = re.compile(r"^https?://[^\s/]+\S*$")


# --- Errors -----------------------------------------------------------------------------------


def _log_id() -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    return stamp + secrets.token_hex(10).upper()


def ok(data: dict[str, Any]) -> JSONResponse:
    """A successful answer in TikTok's envelope."""
    return JSONResponse({"data": data, "error": {"code": "ok", "message": "", "log_id": _log_id()}})


class TikTokError(Exception):
    """An error the v2 API answers: its code and HTTP status."""

    def __init__(self, status: int, code: str, message: str) -> None:
        """Build the error."""
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def response(self) -> JSONResponse:
        """The error body, with a fresh log_id."""
        error = {"code": self.code, "message": self.message, "log_id": _log_id()}
        return JSONResponse(status_code=self.status, content={"data": {}, "error": error})


def invalid_params(message: str) -> TikTokError:
    """400: one or more fields of the request are invalid."""
    return TikTokError(400, "invalid_params", message)


def _token_invalid(
    message: str = "The access token is invalid or not found in the request.",
) -> TikTokError:
    return TikTokError(401, "access_token_invalid", message)


def _scope_missing(scope: str) -> TikTokError:
    return TikTokError(
        401,
        "scope_not_authorized",
        f"The user did not authorize the scope required for completing this request ({scope}).",
    )


def _rate_limited() -> TikTokError:
    return TikTokError(429, "rate_limit_exceeded", "The API rate limit was exceeded. Try later.")


def _internal_error() -> TikTokError:
    return TikTokError(500, "internal_error", "Something went wrong. Please try again later.")


def _privacy_mismatch(level: str | None, options: tuple[str, ...]) -> TikTokError:
    return TikTokError(
        400,
        "privacy_level_option_mismatch",
        f"privacy_level {level!r} is not specified or not among the creator's options "
        f"{list(options)}",
    )


def _too_many_posts(cap: int) -> TikTokError:
    return TikTokError(
        403,
        "spam_risk_too_many_posts",
        f"The daily post cap from the API ({cap}) is reached for the current user.",
    )


class OAuthError(Exception):
    """An error of the token endpoint, OAuth-shaped."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        """Build the error."""
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status

    def response(self) -> JSONResponse:
        """`{error, error_description, log_id}`."""
        return JSONResponse(
            status_code=self.status,
            content={
                "error": self.error,
                "error_description": self.description,
                "log_id": _log_id(),
            },
        )


def _utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


# --- What the platform holds ------------------------------------------------------------------


@dataclass
class Creator:
    """A TikTok creator account."""

    open_id: str
    username: str
    nickname: str
    privacy_options: tuple[str, ...]
    max_duration_s: int


@dataclass(frozen=True)
class AccessToken:
    """A user access token and the scopes it was granted."""

    value: str
    open_id: str
    scopes: tuple[str, ...]
    expires_at: float


@dataclass
class RefreshToken:
    """A refresh token; with rotation it works once."""

    value: str
    open_id: str
    scopes: tuple[str, ...]
    expires_at: float
    used: bool = False


@dataclass(frozen=True)
class PostSpec:
    """What an init asks for, once validated."""

    media_type: MediaType
    inbox: bool
    title: str
    description: str
    privacy_level: str | None
    urls: tuple[str, ...]


@dataclass(frozen=True)
class Publish:
    """A post TikTok took on at an init, and what becomes of it (fixed at the init)."""

    publish_id: str
    open_id: str
    spec: PostSpec
    created_at: float
    done_at: float
    fail_reason: str | None
    # The post's id (not for inbox drafts or failures) and when it is public (None: never).
    post_id: int | None
    public_at: float | None
    # When it completed, in ms, unique per creator: its place in the video list.
    listed_ms: int
    duration_s: float
    fault_key: str

    def status(self, now: float) -> Status:
        """Where the post is now."""
        if now < self.done_at:
            return "PROCESSING_DOWNLOAD"
        if self.fail_reason is not None:
            return "FAILED"
        return "SEND_TO_USER_INBOX" if self.spec.inbox else "PUBLISH_COMPLETE"

    def public_id(self, now: float) -> int | None:
        """The public post id, once moderation passed."""
        if self.public_at is None or now < self.public_at:
            return None
        return self.post_id

    def status_data(self, now: float) -> dict[str, Any]:
        """The `data` of status/fetch."""
        status = self.status(now)
        data: dict[str, Any] = {"status": status}
        if status == "FAILED":
            data["fail_reason"] = self.fail_reason
        public_id = self.public_id(now)
        if public_id is not None:
            data["publicaly_available_post_id"] = [public_id]
        return data

    def ledger_entry(self, now: float) -> dict[str, Any]:
        """How GET /ledger shows the post."""
        public_id = self.public_id(now)
        spec = self.spec
        status = self.status(now)
        return {
            "externalId": str(public_id) if public_id is not None else self.publish_id,
            "accountId": self.open_id,
            "caption": spec.title if spec.media_type == "VIDEO" else spec.description,
            "mediaUrls": list(spec.urls),
            "mediaType": spec.media_type,
            "containerId": self.publish_id,
            "receivedAt": iso_ms(self.created_at),
            "status": status,
            "inbox": spec.inbox,
            "title": spec.title,
            "description": spec.description,
            "privacyLevel": spec.privacy_level,
            "failReason": self.fail_reason if status == "FAILED" else None,
        }


# --- Request bodies ---------------------------------------------------------------------------


class _Body(BaseModel):
    # TikTok ignores fields it does not know (brand toggles, is_aigc, ...).
    model_config = ConfigDict(extra="ignore")


class VideoPostInfo(_Body):
    """`post_info` of a direct video post."""

    title: str = ""
    privacy_level: str | None = None
    disable_duet: bool = False
    disable_comment: bool = False
    disable_stitch: bool = False
    video_cover_timestamp_ms: int | None = Field(default=None, ge=0)


class VideoSourceInfo(_Body):
    """`source_info` of a video init."""

    source: str
    video_url: str | None = None
    video_size: int | None = None
    chunk_size: int | None = None
    total_chunk_count: int | None = None


class VideoInit(_Body):
    """Body of video/init and inbox/video/init."""

    post_info: VideoPostInfo | None = None
    source_info: VideoSourceInfo


class PhotoPostInfo(_Body):
    """`post_info` of a photo post."""

    title: str = ""
    description: str = ""
    privacy_level: str | None = None
    disable_comment: bool = False
    auto_add_music: bool = False


class PhotoSourceInfo(_Body):
    """`source_info` of a photo post."""

    source: str
    photo_images: list[str]
    photo_cover_index: int


class ContentInit(_Body):
    """Body of content/init."""

    post_info: PhotoPostInfo
    source_info: PhotoSourceInfo
    post_mode: str
    media_type: str


class StatusFetch(_Body):
    """Body of status/fetch."""

    publish_id: str = Field(min_length=1)


class VideoList(_Body):
    """Body of video/list."""

    max_count: int = DEFAULT_LIST_COUNT
    cursor: int | None = None


_Model = TypeVar("_Model", bound=BaseModel)


def _parsed(model: type[_Model], raw: Any) -> _Model:
    if not isinstance(raw, dict):
        raise invalid_params("The request body must be a JSON object")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        parts = [f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()]
        raise invalid_params("; ".join(parts)) from None


def _check_url(url: str | None, name: str) -> str:
    if not url or not _URL.match(url):
        raise invalid_params(f"{name} must be an http(s) URL, got {url!r}")
    return url


def _check_length(text: str, limit: int, name: str) -> None:
    if _utf16_len(text) > limit:
        raise invalid_params(f"{name} is {_utf16_len(text)} UTF-16 runes; at most {limit}")


def video_spec(raw: Any, *, inbox: bool) -> PostSpec:
    """Validate a video init as TikTok does, or raise TikTokError."""
    body = _parsed(VideoInit, raw)
    source = body.source_info
    if source.source == "FILE_UPLOAD":
        raise invalid_params("FILE_UPLOAD is not emulated; use PULL_FROM_URL")
    if source.source != "PULL_FROM_URL":
        raise invalid_params(f"source_info.source must be PULL_FROM_URL, got {source.source!r}")
    url = _check_url(source.video_url, "source_info.video_url")
    if inbox:
        # An upload takes no post_info: the creator writes it in the app.
        return PostSpec("VIDEO", True, "", "", None, (url,))
    info = body.post_info or VideoPostInfo()
    _check_length(info.title, MAX_VIDEO_TITLE, "post_info.title")
    return PostSpec("VIDEO", False, info.title, "", info.privacy_level, (url,))


def photo_spec(raw: Any) -> PostSpec:
    """Validate a photo init as TikTok does, or raise TikTokError."""
    body = _parsed(ContentInit, raw)
    if body.media_type != "PHOTO":
        raise invalid_params(f"media_type must be PHOTO, got {body.media_type!r}")
    if body.post_mode not in ("DIRECT_POST", "MEDIA_UPLOAD"):
        raise invalid_params(f"post_mode must be DIRECT_POST or MEDIA_UPLOAD, not {body.post_mode}")
    source = body.source_info
    if source.source != "PULL_FROM_URL":
        raise invalid_params("photos are only taken with source PULL_FROM_URL")
    images = source.photo_images
    if not 1 <= len(images) <= MAX_PHOTOS:
        raise invalid_params(f"photo_images holds 1 to {MAX_PHOTOS} URLs, got {len(images)}")
    urls = tuple(_check_url(u, "source_info.photo_images[]") for u in images)
    if not 0 <= source.photo_cover_index < len(images):
        raise invalid_params(f"photo_cover_index {source.photo_cover_index} is out of range")
    info = body.post_info
    _check_length(info.title, MAX_PHOTO_TITLE, "post_info.title")
    _check_length(info.description, MAX_PHOTO_DESCRIPTION, "post_info.description")
    inbox = body.post_mode == "MEDIA_UPLOAD"
    privacy = None if inbox else info.privacy_level
    return PostSpec("PHOTO", inbox, info.title, info.description, privacy, urls)


def init_key(who: str, call: str, raw: Any) -> str:
    """The fault key of an init: its creator, endpoint, title, description and media URLs."""

    def part(value: Any, name: str) -> dict[str, Any]:
        inner = value.get(name) if isinstance(value, dict) else None
        return inner if isinstance(inner, dict) else {}

    post, source = part(raw, "post_info"), part(raw, "source_info")
    urls = source.get("video_url") or source.get("photo_images")
    parts = [who, call, post.get("title"), post.get("description"), urls]
    return json.dumps(parts, ensure_ascii=False, default=str)


# --- The platform -----------------------------------------------------------------------------


class TikTokPlatform:
    """Creators, tokens and posts: the platform's state and its rules.

    Every method runs under one lock, start to end, so a check and the change it allows are
    never interleaved with another call's (two refreshes of one refresh token race here).
    """

    def __init__(self, knobs: TikTokFaults, clock: Clock) -> None:
        """An empty platform reading `knobs` live."""
        self.knobs = knobs
        self.clock = clock
        self._lock = threading.Lock()
        self._creators: dict[str, Creator] = {}
        self._tokens: dict[str, AccessToken] = {}
        self._refresh_tokens: dict[str, RefreshToken] = {}
        self._publishes: dict[str, Publish] = {}
        self._ids: set[str] = set()
        self._listed_ms: dict[str, set[int]] = {}
        self._calls: dict[tuple[str, str], deque[float]] = {}

    # ids and tokens

    def _new_id(self, prefix: str, digits: int) -> str:
        """A fresh id: `prefix` and then `digits` digits."""
        while True:
            candidate = prefix + "".join(str(secrets.randbelow(10)) for _ in range(digits))
            if candidate not in self._ids:
                self._ids.add(candidate)
                return candidate

    def _issue(self, open_id: str, scopes: tuple[str, ...]) -> tuple[AccessToken, RefreshToken]:
        now, knobs = self.clock.now(), self.knobs
        expiry = now + knobs.access_token_lifetime_s
        access = AccessToken("act." + secrets.token_urlsafe(36), open_id, scopes, expiry)
        self._tokens[access.value] = access
        expiry = now + knobs.refresh_token_lifetime_s
        refresh = RefreshToken("rft." + secrets.token_urlsafe(36), open_id, scopes, expiry)
        self._refresh_tokens[refresh.value] = refresh
        return access, refresh

    def add_creator(
        self,
        open_id: str | None,
        username: str | None,
        nickname: str | None,
        privacy_options: tuple[str, ...] | None,
        max_duration_s: int | None,
        scopes: tuple[str, ...] | None,
    ) -> tuple[Creator, AccessToken, RefreshToken, bool]:
        """A creator (new, or the known one with this id, updated with what is given) and a
        freshly issued token pair."""
        with self._lock:
            creator = self._creators.get(open_id or "")
            created = creator is None
            if creator is None:
                open_id = open_id or str(uuid.uuid4())
                creator = Creator(
                    open_id,
                    username or f"creator_{open_id.replace('-', '')[:8]}",
                    nickname or "Emulated Creator",
                    PRIVACY_LEVELS,
                    DEFAULT_MAX_DURATION_S,
                )
                self._creators[open_id] = creator
            elif username is not None:
                creator.username = username
            if nickname is not None:
                creator.nickname = nickname
            if privacy_options is not None:
                creator.privacy_options = privacy_options
            if max_duration_s is not None:
                creator.max_duration_s = max_duration_s
            access, refresh = self._issue(creator.open_id, scopes or SCOPES)
            return creator, access, refresh, created

    def open_id_of(self, token_value: str | None) -> str | None:
        """The creator a token belongs to, without checking it (for fault keys)."""
        token = self._tokens.get(token_value or "")
        return token.open_id if token else None

    def open_id_of_refresh(self, token_value: str | None) -> str | None:
        """The creator a refresh token belongs to, without checking it (for fault keys)."""
        token = self._refresh_tokens.get(token_value or "")
        return token.open_id if token else None

    def _authorized(
        self, token_value: str | None, scopes: tuple[str, ...], call: str
    ) -> tuple[Creator, AccessToken]:
        """The token's creator, if the token is valid, has one of `scopes`, and is within the
        call's rate limit (which this call then counts against)."""
        token = self._tokens.get(token_value or "")
        if token is None:
            raise _token_invalid()
        now = self.clock.now()
        if now >= token.expires_at:
            raise _token_invalid("The access token has expired.")
        if not set(scopes) & set(token.scopes):
            raise _scope_missing(" or ".join(scopes))
        limit = RATE_LIMITS.get(call)
        if limit is not None and self.knobs.enforce_rate_limits:
            window = self._calls.setdefault((token.value, call), deque())
            while window and window[0] <= now - RATE_WINDOW_S:
                window.popleft()
            if len(window) >= limit:
                raise _rate_limited()
            window.append(now)
        return self._creators[token.open_id], token

    def refresh(self, form: dict[str, str]) -> tuple[AccessToken, RefreshToken]:
        """A new access token (and, rotating, a new refresh token) for a refresh token."""
        with self._lock:
            grant_type = form.get("grant_type")
            if not grant_type:
                raise OAuthError("invalid_request", "grant_type is required")
            if grant_type != "refresh_token":
                raise OAuthError(
                    "unsupported_grant_type", f"grant_type {grant_type!r} is not supported"
                )
            if not form.get("client_key") or not form.get("client_secret"):
                raise OAuthError("invalid_client", "client_key and client_secret are required")
            value = form.get("refresh_token")
            if not value:
                raise OAuthError("invalid_request", "refresh_token is required")
            refresh = self._refresh_tokens.get(value)
            now = self.clock.now()
            if refresh is None or refresh.used or now >= refresh.expires_at:
                raise OAuthError("invalid_grant", "Refresh token is invalid or expired.")
            if not self.knobs.rotate_refresh_tokens:
                access, _ = self._issue(refresh.open_id, refresh.scopes)
                return access, refresh
            refresh.used = True
            return self._issue(refresh.open_id, refresh.scopes)

    # publishing

    def _active_direct_posts(self, open_id: str, now: float) -> int:
        since = now - DAY_S
        return sum(
            1
            for p in self._publishes.values()
            if p.open_id == open_id
            and not p.spec.inbox
            and p.created_at > since
            and p.status(now) != "FAILED"
        )

    def creator_info(self, token_value: str | None) -> dict[str, Any]:
        """What the creator may post, as creator_info/query answers it."""
        with self._lock:
            creator, _ = self._authorized(token_value, ("video.publish",), "creator_info")
            if self._active_direct_posts(creator.open_id, self.clock.now()) >= (
                self.knobs.daily_cap
            ):
                raise _too_many_posts(self.knobs.daily_cap)
            return {
                "creator_avatar_url": f"{CDN_HOST}/avatar/{creator.open_id}.jpeg",
                "creator_username": creator.username,
                "creator_nickname": creator.nickname,
                "privacy_level_options": list(creator.privacy_options),
                "comment_disabled": False,
                "duet_disabled": False,
                "stitch_disabled": False,
                "max_video_post_duration_sec": creator.max_duration_s,
            }

    def init(
        self,
        token_value: str | None,
        call: str,
        raw: Any,
        fail_draw: float,
        fault_key: str | None,
    ) -> Publish:
        """Validate an init and take the post on: from here it goes out on its own."""
        with self._lock:
            if call == "content_init":
                mode = raw.get("post_mode") if isinstance(raw, dict) else None
                scope = "video.upload" if mode == "MEDIA_UPLOAD" else "video.publish"
            else:
                scope = "video.upload" if call == "inbox_init" else "video.publish"
            creator, _ = self._authorized(token_value, (scope,), call)
            spec = (
                photo_spec(raw)
                if call == "content_init"
                else video_spec(raw, inbox=call == "inbox_init")
            )
            now = self.clock.now()
            if not spec.inbox:
                if spec.privacy_level not in creator.privacy_options:
                    raise _privacy_mismatch(spec.privacy_level, creator.privacy_options)
                if self._active_direct_posts(creator.open_id, now) >= self.knobs.daily_cap:
                    raise _too_many_posts(self.knobs.daily_cap)
            return self._take_on(creator, spec, now, fail_draw, fault_key)

    def _fail_reason(self, creator: Creator, spec: PostSpec, fail_draw: float) -> str | None:
        if fail_draw < self.knobs.rate_fail:
            reason = self.knobs.fail_reason
            if reason in ("video_pull_failed", "photo_pull_failed"):
                return "video_pull_failed" if spec.media_type == "VIDEO" else "photo_pull_failed"
            return reason
        too_long = self.knobs.video_duration_s > creator.max_duration_s
        if spec.media_type == "VIDEO" and not spec.inbox and too_long:
            return "duration_check_failed"
        return None

    def _take_on(
        self,
        creator: Creator,
        spec: PostSpec,
        now: float,
        fail_draw: float,
        fault_key: str | None,
    ) -> Publish:
        fail_reason = self._fail_reason(creator, spec, fail_draw)
        done_at = now + self.knobs.processing_s
        posts = fail_reason is None and not spec.inbox
        # An int64 of 19 digits, as TikTok's post ids are.
        post_id = int(self._new_id("7", 18)) if posts else None
        public_at = (
            done_at + self.knobs.moderation_s if posts and spec.privacy_level == PUBLIC else None
        )
        taken = self._listed_ms.setdefault(creator.open_id, set())
        listed_ms = int(done_at * 1000)
        while listed_ms in taken:
            listed_ms += 1
        taken.add(listed_ms)
        kind = "v" if spec.media_type == "VIDEO" else "p"
        where = "inbox" if spec.inbox else "pub"
        publish_id = self._new_id(f"{kind}_{where}_url~v2.", 19)
        publish = Publish(
            publish_id=publish_id,
            open_id=creator.open_id,
            spec=spec,
            created_at=now,
            done_at=done_at,
            fail_reason=fail_reason,
            post_id=post_id,
            public_at=public_at,
            listed_ms=listed_ms,
            duration_s=self.knobs.video_duration_s if spec.media_type == "VIDEO" else 0.0,
            # A seeded run's key stands for the random publish id, so it replays.
            fault_key=fault_key or publish_id,
        )
        self._publishes[publish_id] = publish
        return publish

    def fault_key_of(self, publish_id: str) -> str | None:
        """The fault key of a post's status reads, if it exists."""
        publish = self._publishes.get(publish_id)
        return publish.fault_key if publish else None

    def status(self, token_value: str | None, raw: Any) -> dict[str, Any]:
        """A post's status now, for its own creator."""
        with self._lock:
            creator, _ = self._authorized(token_value, ("video.upload", "video.publish"), "status")
            body = _parsed(StatusFetch, raw)
            publish = self._publishes.get(body.publish_id)
            if publish is None or publish.open_id != creator.open_id:
                raise invalid_params(f"publish_id {body.publish_id!r} does not exist")
            return publish.status_data(self.clock.now())

    # reading

    def videos(self, token_value: str | None, fields: str | None, raw: Any) -> dict[str, Any]:
        """One page of the creator's public posts, newest first."""
        with self._lock:
            creator, _ = self._authorized(token_value, ("video.list",), "list")
            wanted = [f for f in (fields or "").split(",") if f.strip()]
            if not wanted:
                raise invalid_params("fields is required")
            unknown = [f for f in wanted if f.strip() not in VIDEO_FIELDS]
            if unknown:
                raise invalid_params(f"unknown fields: {', '.join(unknown)}")
            body = _parsed(VideoList, {} if raw is None else raw)
            if not 1 <= body.max_count <= MAX_LIST_COUNT:
                raise invalid_params(f"max_count must be 1 to {MAX_LIST_COUNT}")
            now = self.clock.now()
            listed = sorted(
                (
                    p
                    for p in self._publishes.values()
                    if p.open_id == creator.open_id and p.public_id(now) is not None
                ),
                key=lambda p: p.listed_ms,
                reverse=True,
            )
            if body.cursor is not None:
                listed = [p for p in listed if p.listed_ms < body.cursor]
            page = listed[: body.max_count]
            return {
                "videos": [_video_fields(creator, p, wanted) for p in page],
                "cursor": page[-1].listed_ms if page else (body.cursor or 0),
                "has_more": len(listed) > len(page),
            }

    # the emulator's own

    def ledger(self) -> list[dict[str, Any]]:
        """Every post taken on, in init order."""
        with self._lock:
            now = self.clock.now()
            return [p.ledger_entry(now) for p in self._publishes.values()]

    def reset(self) -> None:
        """Forget posts, the daily cap's count and the rate windows; keep creators, tokens."""
        with self._lock:
            self._publishes.clear()
            self._ids.clear()
            self._listed_ms.clear()
            self._calls.clear()


def _video_fields(creator: Creator, p: Publish, fields: list[str]) -> dict[str, Any]:
    post_id = str(p.post_id)
    kind = "video" if p.spec.media_type == "VIDEO" else "photo"
    values: dict[str, Any] = {
        "id": post_id,
        "title": p.spec.title,
        "video_description": p.spec.title if kind == "video" else p.spec.description,
        "create_time": int(p.done_at),
        "share_url": f"{SHARE_HOST}/@{creator.username}/{kind}/{post_id}",
        "duration": round(p.duration_s),
        "cover_image_url": f"{CDN_HOST}/obj/{post_id}~cover.jpeg",
        "embed_link": f"{SHARE_HOST}/player/v1/{post_id}",
        "height": 1920,
        "width": 1080,
        "like_count": 0,
        "comment_count": 0,
        "share_count": 0,
        "view_count": 0,
    }
    return {name.strip(): values[name.strip()] for name in fields}


# --- Requests ---------------------------------------------------------------------------------


def bearer_token(request: Request) -> str | None:
    """The access token of a call, from `Authorization: Bearer …`."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


async def json_body(request: Request) -> Any:
    """The call's JSON body, or None when there is none or it is not JSON."""
    body = await request.body()
    if not body:
        return None
    try:
        return json.loads(body)
    except ValueError:
        return None


class AccountRequest(BaseModel):
    """Body of POST /emulator/accounts."""

    model_config = ConfigDict(extra="forbid")

    open_id: str | None = Field(default=None, alias="openId", pattern=_OPEN_ID.pattern)
    username: str | None = Field(default=None, pattern=_USERNAME.pattern)
    nickname: str | None = Field(default=None, min_length=1, max_length=30)
    scope: list[Scope] | None = Field(default=None, min_length=1)
    privacy_level_options: list[PrivacyLevel] | None = Field(
        default=None, alias="privacyLevelOptions", min_length=1
    )
    max_video_post_duration_sec: int | None = Field(
        default=None, alias="maxVideoPostDurationSec", ge=1
    )


# --- The app ----------------------------------------------------------------------------------


def create_app(faults: TikTokFaults | None = None, clock: Clock | None = None) -> FastAPI:
    """Build a fresh emulator with its own platform state, knobs and draw counters."""
    live = dataclasses.replace(faults) if faults is not None else TikTokFaults()
    time_source: Clock = clock or SystemClock()
    platform = TikTokPlatform(live, time_source)
    calls = EmulatedCalls(time_source)
    app = emulator_app(
        "TikTok emulator",
        live,
        platform,
        calls,
        TikTokFaultsUpdate,
        invalid=lambda message: invalid_params(message).response(),
    )

    async def api_call(
        call: Call,
        key: str,
        action: Callable[[CallDraws, int | None], dict[str, Any]],
    ) -> Response:
        oauth = call == "refresh"

        def answer(values: CallDraws, index: int | None) -> Response:
            try:
                result = action(values, index)
            except (TikTokError, OAuthError) as exc:
                return exc.response()
            return JSONResponse(result) if oauth else ok(result)

        def limited() -> Response:
            if oauth:
                return OAuthError("rate_limit_exceeded", "Too many requests.", 429).response()
            return _rate_limited().response()

        def server_error() -> Response:
            if oauth:
                return OAuthError("server_error", "Internal error; try again.", 500).response()
            return _internal_error().response()

        return await calls.call(
            live,
            call,
            key,
            point_of_no_return="init" if call in INIT_CALLS else None,
            limited=limited,
            server_error=server_error,
            answer=answer,
        )

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return invalid_params(describe_validation_error(exc)).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
            return TikTokError(405, "method_not_allowed", message).response()
        return TikTokError(404, "not_found", f"No route {request.url.path}").response()

    # --- the emulator's own endpoints

    @app.post("/emulator/accounts", status_code=201)
    async def create_account(body: AccountRequest | None = None) -> JSONResponse:
        """Emulator-only: make a creator (or take the one with this `openId`) and issue it a
        token pair, as Login Kit would. 201 for a new creator, 200 for a known one."""
        request = body or AccountRequest()
        creator, access, refresh, created = platform.add_creator(
            request.open_id,
            request.username,
            request.nickname,
            tuple(request.privacy_level_options) if request.privacy_level_options else None,
            request.max_video_post_duration_sec,
            tuple(request.scope) if request.scope else None,
        )
        now = time_source.now()
        return JSONResponse(
            status_code=201 if created else 200,
            content={
                "openId": creator.open_id,
                "username": creator.username,
                "accessToken": access.value,
                "refreshToken": refresh.value,
                "expiresIn": int(access.expires_at - now),
                "refreshExpiresIn": int(refresh.expires_at - now),
                "scope": ",".join(access.scopes),
                "privacyLevelOptions": list(creator.privacy_options),
                "maxVideoPostDurationSec": creator.max_duration_s,
            },
        )

    # --- TikTok

    @app.post("/v2/oauth/token/")
    async def oauth_token(request: Request) -> Response:
        """Refresh an access token (the only grant emulated)."""
        body = (await request.body()).decode("utf-8", "replace")
        form = dict(parse_qsl(body, keep_blank_values=True))
        refresh_value = form.get("refresh_token")
        key = platform.open_id_of_refresh(refresh_value) or (refresh_value or "")

        def action(_: CallDraws, __: int | None) -> dict[str, Any]:
            access, refresh = platform.refresh(form)
            now = time_source.now()
            return {
                "access_token": access.value,
                "expires_in": int(access.expires_at - now),
                "open_id": access.open_id,
                "refresh_expires_in": int(refresh.expires_at - now),
                "refresh_token": refresh.value,
                "scope": ",".join(access.scopes),
                "token_type": "Bearer",
            }

        return await api_call("refresh", key, action)

    @app.post("/v2/post/publish/creator_info/query/")
    async def creator_info(request: Request) -> Response:
        """What the creator may post: privacy options, the longest video."""
        token = bearer_token(request)
        return await api_call(
            "creator_info",
            platform.open_id_of(token) or "",
            lambda _, __: platform.creator_info(token),
        )

    async def init(call: Call, request: Request) -> Response:
        token = bearer_token(request)
        raw = await json_body(request)
        key = init_key(platform.open_id_of(token) or "", call, raw)

        def action(values: CallDraws, index: int | None) -> dict[str, Any]:
            fault_key = f"{key}#{index}" if index is not None else None
            publish = platform.init(token, call, raw, values.outcome, fault_key)
            return {"publish_id": publish.publish_id}

        return await api_call(call, key, action)

    @app.post("/v2/post/publish/video/init/")
    async def video_init(request: Request) -> Response:
        """Direct post of a video: the point of no return, with no idempotency key."""
        return await init("video_init", request)

    @app.post("/v2/post/publish/inbox/video/init/")
    async def inbox_video_init(request: Request) -> Response:
        """Upload a video to the creator's inbox, as a draft."""
        return await init("inbox_init", request)

    @app.post("/v2/post/publish/content/init/")
    async def content_init(request: Request) -> Response:
        """Photos: a direct post, or an upload to the inbox."""
        return await init("content_init", request)

    @app.post("/v2/post/publish/status/fetch/")
    async def status_fetch(request: Request) -> Response:
        """Where a post is: processing, complete (and public), in the inbox, or failed."""
        token = bearer_token(request)
        raw = await json_body(request)
        publish_id = raw.get("publish_id") if isinstance(raw, dict) else None
        key = platform.fault_key_of(str(publish_id)) or str(publish_id or "")
        return await api_call("status", key, lambda _, __: platform.status(token, raw))

    @app.post("/v2/video/list/")
    async def video_list(request: Request) -> Response:
        """The creator's public posts, newest first, a page at a time."""
        token = bearer_token(request)
        raw = await json_body(request)
        fields = request.query_params.get("fields")
        return await api_call(
            "list",
            platform.open_id_of(token) or "",
            lambda _, __: platform.videos(token, fields, raw),
        )

    return app


def serve(host: str, port: int, faults: TikTokFaults) -> None:
    """Run the TikTok emulator with uvicorn in this process until interrupted."""
    uvicorn.run(create_app(faults), host=host, port=port, log_level="warning")
