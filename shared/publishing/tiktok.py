"""The TikTok adapter: the Content Posting API (v2) mapped onto the protocol.

prepare     creator info: the privacy level the post goes out with must be among the
            creator's options. Reversible (a read): a cancel now still wins.
publish     `init` with `PULL_FROM_URL` (video direct post, the inbox for a draft, or photos):
            the point of no return, since TikTok then fetches and posts on its own. The answer
            is a `publish_id`, saved in the first commit after it; completion is asynchronous.
completion  `status/fetch` with the `publish_id`: processing, `PUBLISH_COMPLETE` (public once
            `publicaly_available_post_id` comes, after moderation), `SEND_TO_USER_INBOX`, or
            `FAILED` with a reason.
lookup      a lost `init` answer leaves no `publish_id`; the creator's public videos
            (`POST /v2/video/list/`) are matched on the caption and creation time. A post not
            (yet) listed cannot be told apart from one never made: the protocol then ends it
            UPLOAD_OUTCOME_UNKNOWN, never a second `init`.

No call takes an idempotency key: TikTok has none. Errors are classified in
shared/publishing/platforms.py (`classify_tiktok`).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Final

import httpx

from shared.publishing.platforms import (
    Accepted,
    Completion,
    CompletionState,
    PlatformError,
    Preparation,
    Refreshed,
    Uploaded,
    UploadPayload,
    classify_exception,
    classify_tiktok,
)

# The privacy level posts go out with: public, as a scheduler's user means by "publish".
PRIVACY: Final = "PUBLIC_TO_EVERYONE"
_LIST_FIELDS: Final = "id,title,video_description,create_time,share_url"
_MAX_PAGES: Final = 10
CLOCK_SLACK: Final = timedelta(minutes=5)
# Fail reasons TikTok documents as worth another try; every other reason is final.
RETRYABLE_REASONS: Final = frozenset({"internal", "video_pull_failed", "photo_pull_failed"})


def _is_photo(payload: UploadPayload) -> bool:
    return all(m.get("type") != "video" for m in payload.media)


class TikTokAdapter:
    """Publishes for one TikTok creator with its access token."""

    idempotent = False

    def __init__(self, base_url: str, client: httpx.Client, *, access_token: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.client = client
        self.access_token = access_token

    def _call(
        self, path: str, body: dict[str, Any], params: dict[str, str] | None = None
    ) -> dict[str, Any]:
        try:
            response = self.client.post(
                f"{self.base_url}{path}",
                json=body,
                params=params,
                headers={"Authorization": f"Bearer {self.access_token}"},
            )
        except httpx.HTTPError as exc:
            raise classify_exception(exc) from exc
        if response.status_code == 200:
            try:
                answer = response.json()
            except ValueError:
                answer = None
            if isinstance(answer, dict) and (answer.get("error") or {}).get("code") == "ok":
                data = answer.get("data")
                return data if isinstance(data, dict) else {}
        raise classify_tiktok(response)

    # --- prepare: a read ---------------------------------------------------------------

    def prepare(
        self, key: str, payload: UploadPayload, wait: Callable[[float], bool]
    ) -> Preparation | None:
        """The creator's options: a post whose privacy level is not among them is refused
        here, before the point of no return."""
        if payload.mode == "draft":
            return Preparation()  # an inbox upload carries no privacy level
        info = self._call("/v2/post/publish/creator_info/query/", {})
        options = info.get("privacy_level_options") or []
        if PRIVACY not in options:
            raise PlatformError(
                f"the creator cannot post {PRIVACY} (options: {', '.join(map(str, options))})",
                transient=False,
                platform_code="privacy_level_option_mismatch",
            )
        return Preparation()

    # --- publish: the point of no return ---------------------------------------------------

    def publish(self, key: str, payload: UploadPayload, handle: str | None) -> Accepted:
        """`init`; TikTok answers a `publish_id` and goes on by itself."""
        urls = [str(m["url"]) for m in payload.media]
        if _is_photo(payload):
            body: dict[str, Any] = {
                "media_type": "PHOTO",
                "post_mode": "MEDIA_UPLOAD" if payload.mode == "draft" else "DIRECT_POST",
                "post_info": {"description": payload.caption, "disable_comment": False},
                "source_info": {
                    "source": "PULL_FROM_URL",
                    "photo_images": urls,
                    "photo_cover_index": 0,
                },
            }
            if payload.mode != "draft":
                body["post_info"]["privacy_level"] = PRIVACY
            data = self._call("/v2/post/publish/content/init/", body)
        elif payload.mode == "draft":
            data = self._call(
                "/v2/post/publish/inbox/video/init/",
                {"source_info": {"source": "PULL_FROM_URL", "video_url": urls[0]}},
            )
        else:
            data = self._call(
                "/v2/post/publish/video/init/",
                {
                    "post_info": {
                        "title": payload.caption,
                        "privacy_level": PRIVACY,
                        "disable_duet": False,
                        "disable_comment": False,
                        "disable_stitch": False,
                    },
                    "source_info": {"source": "PULL_FROM_URL", "video_url": urls[0]},
                },
            )
        publish_id = data.get("publish_id")
        if not publish_id:
            raise PlatformError("init answered no publish_id", transient=True, ambiguous=True)
        return Accepted(str(publish_id))

    # --- completion ----------------------------------------------------------------------

    def completion(self, handle: str) -> Completion:
        """What TikTok says of the `publish_id`."""
        data = self._call("/v2/post/publish/status/fetch/", {"publish_id": handle})
        status = data.get("status")
        public = data.get("publicaly_available_post_id") or []
        if status == "PUBLISH_COMPLETE":
            if public:
                return Completion(CompletionState.PUBLISHED, external_id=str(public[0]))
            return Completion(CompletionState.PENDING, complete=True)  # in moderation
        if status == "SEND_TO_USER_INBOX":
            return Completion(CompletionState.DRAFT, external_id=handle)
        if status == "FAILED":
            return Completion(CompletionState.FAILED, reason=str(data.get("fail_reason")))
        return Completion(CompletionState.PENDING)

    # --- lookup: a lost init ---------------------------------------------------------------

    def lookup(
        self, key: str, payload: UploadPayload, handle: str | None, since: datetime
    ) -> Uploaded | None:
        """The public video this post became. TikTok lists only public videos, so "not
        found" never proves "not made": it raises (the protocol cannot tell)."""
        if handle is not None:
            done = self.completion(handle)
            if done.state == CompletionState.FAILED:
                return None  # TikTok made nothing of it
            if done.state in (CompletionState.PUBLISHED, CompletionState.DRAFT):
                return Uploaded(done.external_id or handle, done.external_url)
            raise PlatformError("still processing", transient=True, ambiguous=True)
        found = self._find_video(payload, since - CLOCK_SLACK)
        if len(found) == 1:
            return Uploaded(str(found[0]["id"]), found[0].get("share_url"))
        raise PlatformError(
            f"{len(found)} public videos match a post whose init answer was lost",
            transient=True,
            ambiguous=True,
            platform_code="init_unmatched",
        )

    def _find_video(self, payload: UploadPayload, since: datetime) -> list[dict[str, Any]]:
        floor = int(since.timestamp())
        body: dict[str, Any] = {"max_count": 20}
        matches = []
        for _ in range(_MAX_PAGES):
            data = self._call("/v2/video/list/", body, params={"fields": _LIST_FIELDS})
            videos = data.get("videos") or []
            for video in videos:
                text = video.get("title") or video.get("video_description") or ""
                if text == payload.caption and int(video.get("create_time", 0)) >= floor:
                    matches.append(video)
            oldest = min((int(v.get("create_time", 0)) for v in videos), default=0)
            if not data.get("has_more") or oldest < floor:
                break
            body = {"max_count": 20, "cursor": data.get("cursor")}
        return matches

    # --- tokens ----------------------------------------------------------------------------

    def refresh(self, refresh_token: str, client_key: str, client_secret: str) -> Refreshed:
        """A new access token (and, when TikTok rotates them, a new refresh token)."""
        try:
            response = self.client.post(
                f"{self.base_url}/v2/oauth/token/",
                data={
                    "grant_type": "refresh_token",
                    "refresh_token": refresh_token,
                    "client_key": client_key,
                    "client_secret": client_secret,
                },
            )
        except httpx.HTTPError as exc:
            raise classify_exception(exc) from exc
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code == 200 and isinstance(body, dict) and "access_token" in body:
            return Refreshed(
                str(body["access_token"]),
                str(body.get("refresh_token") or refresh_token),
                float(body.get("expires_in", 0)),
            )
        raise classify_tiktok(response)
