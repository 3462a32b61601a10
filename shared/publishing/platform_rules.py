"""What each platform refuses that can be known before the upload: caption length, media count
and media kinds. The schedule endpoint answers these as 422 at once; the sandbox platform
refuses the same posts, so a rule here and a platform's refusal never disagree."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any, Final

from shared.models import Platform

# Both platforms document 2,200 characters for a caption; counted in code points.
MAX_CAPTION_CHARS: Final = {Platform.TIKTOK: 2200, Platform.INSTAGRAM: 2200}
# An Instagram carousel holds at most 10 items (images and videos may mix).
INSTAGRAM_MAX_ITEMS: Final = 10
# A TikTok photo post holds at most 35 images; a video post holds exactly one video.
TIKTOK_MAX_PHOTOS: Final = 35


def caption_problem(platform: str, caption: str) -> str | None:
    """Why `platform` would refuse this caption, or None."""
    limit = MAX_CAPTION_CHARS[Platform(platform)]
    if len(caption) > limit:
        return f"{platform} captions are at most {limit} characters; this one has {len(caption)}"
    return None


def media_problem(platform: str, media: Sequence[dict[str, Any]]) -> str | None:
    """Why `platform` would refuse a post of these media items, or None."""
    kinds = Counter(str(item.get("type")) for item in media)
    if not media:
        return f"{platform} posts need at least one media item"
    if platform == Platform.INSTAGRAM:
        if len(media) > INSTAGRAM_MAX_ITEMS:
            return f"instagram posts hold at most {INSTAGRAM_MAX_ITEMS} media items"
        return None
    if kinds["video"] and kinds["image"]:
        return "tiktok posts are one video or images only, never a mix"
    if kinds["video"] > 1:
        return f"tiktok posts hold one video; this content has {kinds['video']}"
    if kinds["image"] > TIKTOK_MAX_PHOTOS:
        return f"tiktok photo posts hold at most {TIKTOK_MAX_PHOTOS} images"
    return None
