"""The Instagram adapter: the Graph API's content-publishing flow mapped onto the protocol.

prepare   create the container (carousel: its items first), wait for `FINISHED`, read the
          publishing quota. All reversible: an unpublished container only expires.
publish   `media_publish` with the container: the point of no return. Never retried blind.
lookup    the container's `status_code` says whether it went out; if `PUBLISHED`, the media is
          the one in the account's media list matching what was sent (caption verbatim, the
          product type, no earlier than the attempt). Never "the newest one".

No call here takes an idempotency key: Graph has none. Errors are classified in
shared/publishing/platforms.py (`classify_graph`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

import httpx

from shared.publishing.platforms import (
    PlatformError,
    Preparation,
    Quota,
    Refreshed,
    Uploaded,
    UploadPayload,
    classify_exception,
    classify_graph,
)

# How often a container's status is asked while it processes: quick at first, then calmer.
_POLL_FIRST_S: Final = 0.25
_POLL_MAX_S: Final = 5.0
# Media list pages read while looking for a published container's media.
_MAX_PAGES: Final = 20
_MEDIA_FIELDS: Final = "id,caption,media_type,media_product_type,timestamp,permalink"
# The platform's clock and ours may differ: look this much earlier than the attempt began.
CLOCK_SLACK: Final = timedelta(minutes=5)


@dataclass(frozen=True)
class _Item:
    media_type: str  # IMAGE or VIDEO, as our content stores them
    url: str


def _items(payload: UploadPayload) -> list[_Item]:
    return [
        _Item("VIDEO" if m.get("type") == "video" else "IMAGE", str(m["url"]))
        for m in payload.media
    ]


def product_type(payload: UploadPayload) -> str:
    """What Instagram files the post under: a lone video is a Reel, anything else the feed."""
    items = _items(payload)
    return "REELS" if len(items) == 1 and items[0].media_type == "VIDEO" else "FEED"


class InstagramAdapter:
    """Publishes for one Instagram account (`user_id`) with its access token."""

    idempotent = False

    def __init__(
        self,
        base_url: str,
        client: httpx.Client,
        *,
        user_id: str,
        access_token: str,
        container_wait_s: float,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.client = client
        self.user_id = user_id
        self.access_token = access_token
        self.container_wait_s = container_wait_s

    # --- HTTP ------------------------------------------------------------------------------

    def _call(self, method: str, path: str, params: dict[str, str]) -> dict[str, Any]:
        query = {**params, "access_token": self.access_token}
        try:
            if method == "GET":
                response = self.client.get(f"{self.base_url}/{path}", params=query)
            else:
                response = self.client.post(f"{self.base_url}/{path}", data=query)
        except httpx.HTTPError as exc:
            raise classify_exception(exc) from exc
        if response.status_code == 200:
            try:
                body = response.json()
            except ValueError:
                body = None
            if isinstance(body, dict):
                return body
        raise classify_graph(response)

    # --- prepare: reversible ---------------------------------------------------------------

    def prepare(
        self, key: str, payload: UploadPayload, wait: Callable[[float], bool]
    ) -> Preparation | None:
        """Make the container and wait for it to finish; None if `wait` says the post is
        no longer ours (a cancel won). Raises PlatformError."""
        container = self._create(payload)
        if not self._await_finished(container, wait):
            return None
        return Preparation(handle=container, quota=self.quota())

    def _create(self, payload: UploadPayload) -> str:
        items = _items(payload)
        if len(items) == 1:
            item = items[0]
            params = {"caption": payload.caption}
            if item.media_type == "VIDEO":
                params |= {"media_type": "REELS", "video_url": item.url}
            else:
                params["image_url"] = item.url
            return self._new_container(params)
        children = []
        for item in items:
            child = {"is_carousel_item": "true"}
            if item.media_type == "VIDEO":
                child |= {"media_type": "VIDEO", "video_url": item.url}
            else:
                child["image_url"] = item.url
            children.append(self._new_container(child))
        return self._new_container(
            {"media_type": "CAROUSEL", "children": ",".join(children), "caption": payload.caption}
        )

    def _new_container(self, params: dict[str, str]) -> str:
        return str(self._call("POST", f"{self.user_id}/media", params)["id"])

    def status(self, container: str) -> str:
        """The container's `status_code`."""
        return str(self._call("GET", container, {"fields": "status_code"})["status_code"])

    def _await_finished(self, container: str, wait: Callable[[float], bool]) -> bool:
        deadline = time.monotonic() + self.container_wait_s
        pause = _POLL_FIRST_S
        while True:
            status = self.status(container)
            if status == "FINISHED":
                return True
            if status in ("ERROR", "EXPIRED"):
                raise PlatformError(
                    f"the container ended {status} while processing",
                    transient=True,
                    platform_code=f"container_{status.lower()}",
                )
            if status == "PUBLISHED":  # a fresh container never is; refuse to go on blind
                raise PlatformError(
                    "a new container reads PUBLISHED", transient=False, platform_code="published"
                )
            if time.monotonic() + pause > deadline:
                raise PlatformError(
                    f"the container was not ready within {self.container_wait_s:g}s",
                    transient=False,
                    platform_code="container_timeout",
                    failure_code="CONTAINER_NOT_READY",
                )
            if not wait(pause):
                return False
            pause = min(pause * 2, _POLL_MAX_S)

    def quota(self) -> Quota:
        """The account's publishing quota as the platform reports it now."""
        body = self._call(
            "GET", f"{self.user_id}/content_publishing_limit", {"fields": "quota_usage,config"}
        )
        try:
            entry = body["data"][0]
            return Quota(int(entry["quota_usage"]), int(entry["config"]["quota_total"]))
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise PlatformError(
                "unreadable content_publishing_limit answer", transient=True
            ) from exc

    # --- publish: the point of no return ---------------------------------------------------

    def publish(self, key: str, payload: UploadPayload, handle: str | None) -> Uploaded:
        """`media_publish` the container. Raises PlatformError (ambiguous when it may have
        gone out)."""
        if handle is None:
            # Nothing was ever published without a container: make one, then publish it.
            raise PlatformError("no container yet", transient=True, new_handle=True)
        body = self._call("POST", f"{self.user_id}/media_publish", {"creation_id": handle})
        media_id = str(body["id"])
        return Uploaded(media_id, self._permalink(media_id))

    def _permalink(self, media_id: str) -> str | None:
        try:
            return self._call("GET", media_id, {"fields": "permalink"}).get("permalink")
        except PlatformError:
            return None  # the post is out; its link is a nicety

    # --- lookup: what did the container do? ------------------------------------------------

    def lookup(
        self, key: str, payload: UploadPayload, handle: str | None, since: datetime
    ) -> Uploaded | None:
        """The media the container became; None if the platform says it never went out."""
        if handle is None:
            return None  # no container was ever made, so nothing was published
        status = self.status(handle)
        if status != "PUBLISHED":
            # FINISHED, IN_PROGRESS, ERROR, EXPIRED: the container is not a public post.
            return None
        found = self._find_media(payload, since - CLOCK_SLACK)
        if len(found) == 1:
            media = found[0]
            return Uploaded(str(media["id"]), media.get("permalink"))
        # Published, but its media is not listed yet (or two posts match): cannot bind it.
        raise PlatformError(
            f"the container is PUBLISHED and {len(found)} media match it",
            transient=True,
            ambiguous=True,
            platform_code="media_unmatched",
        )

    def _find_media(self, payload: UploadPayload, since: datetime) -> list[dict[str, Any]]:
        wanted_product = product_type(payload)
        params = {"fields": _MEDIA_FIELDS, "since": str(int(since.timestamp())), "limit": "100"}
        matches: list[dict[str, Any]] = []
        for _ in range(_MAX_PAGES):
            body = self._call("GET", f"{self.user_id}/media", params)
            for media in body.get("data", []):
                if (
                    media.get("caption", "") == payload.caption
                    and media.get("media_product_type") == wanted_product
                ):
                    matches.append(media)
            after = (body.get("paging") or {}).get("cursors", {}).get("after")
            if not after or not (body.get("paging") or {}).get("next"):
                break
            params = {**params, "after": str(after)}
        return matches

    # --- tokens ----------------------------------------------------------------------------

    def refresh(self) -> Refreshed:
        """A new long-lived token for this account (`ig_refresh_token`)."""
        body = self._call("GET", "refresh_access_token", {"grant_type": "ig_refresh_token"})
        try:
            return Refreshed(str(body["access_token"]), None, float(body["expires_in"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise PlatformError("unreadable refresh_access_token answer", transient=True) from exc
