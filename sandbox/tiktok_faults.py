"""The TikTok emulator's knobs, defined once: its faults, and the timings and limits TikTok
documents (or leaves open) that a test may want otherwise.

`TikTokFaults` is built with the sandbox's knob machinery (sandbox/faults.py): `KNOBS` and
`DEFAULTS` here, the body of `PUT /faults` and `POST /faults/reset` (sandbox/tiktok.py), and
the `publisher emulator tiktok` flags are all derived from it. With no flags the emulator is
fault-free and answers with the documented limits.

Light to import on purpose (the standard library only): every CLI call builds the parser.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from sandbox.faults import Knob, check_knobs, defaults_of, knob, knobs_of

DAY_S: Final = 86_400.0
# What status/fetch may answer in `fail_reason`: the retryable ones first, then the final.
RETRYABLE_FAIL_REASONS: Final = ("internal", "video_pull_failed", "photo_pull_failed")
FAIL_REASONS: Final = (
    *RETRYABLE_FAIL_REASONS,
    "spam_risk_too_many_posts",
    "spam_risk_user_banned_from_posting",
    "spam_risk_text",
    "spam_risk",
    "auth_removed",
    "publish_cancelled",
    "duration_check_failed",
    "file_format_check_failed",
    "frame_rate_check_failed",
    "picture_size_check_failed",
    "privacy_level_option_mismatch",
    "url_ownership_unverified",
    "unaudited_client_can_only_post_to_private_accounts",
)


@dataclass
class TikTokFaults:
    """Knobs of the TikTok emulator; every rate is an independent probability per call."""

    latency_ms: float = knob(0.0, "non_negative", "delay every API call by this many ms")
    latency_jitter_ms: float = knob(
        0.0, "non_negative", "and by up to this many ms more, drawn per call"
    )
    init_latency_ms: float = knob(
        0.0, "non_negative", "delay the init calls by this many ms more, before they act"
    )
    rate_limited: float = knob(
        0.0,
        "rate",
        "probability a call is refused with 429 rate_limit_exceeded beyond the real limits "
        "(no effect)",
    )
    rate_server_error: float = knob(
        0.0, "rate", "probability a call other than an init answers 500 internal_error (no effect)"
    )
    rate_server_error_init: float = knob(
        0.0, "rate", "probability an init answers 500 internal_error (nothing is posted)"
    )
    rate_lost: float = knob(
        0.0, "rate", "probability a call other than an init is carried out but its answer is lost"
    )
    rate_lost_init: float = knob(
        0.0, "rate", "probability an init is carried out (it posts) but its answer is lost"
    )
    lost_response: str = knob(
        "502",
        "choice",
        "how an answer is lost: a 502 from the edge, or the connection cut mid-answer",
        choices=("502", "cut"),
    )
    processing_s: float = knob(
        3.0,
        "non_negative",
        "seconds from init to the final status (PROCESSING_DOWNLOAD until then)",
    )
    moderation_s: float = knob(
        2.0,
        "non_negative",
        "seconds after PUBLISH_COMPLETE until a public post's publicaly_available_post_id",
    )
    rate_fail: float = knob(
        0.0, "rate", "probability a new post ends FAILED (with fail_reason) instead of completing"
    )
    fail_reason: str = knob(
        "internal", "choice", "the fail_reason of those FAILED posts", choices=FAIL_REASONS
    )
    video_duration_s: float = knob(
        15.0,
        "non_negative",
        "how long every pulled video is; a direct post longer than the creator's "
        "max_video_post_duration_sec ends FAILED, duration_check_failed",
    )
    daily_cap: int = knob(
        15,
        "count",
        "direct posts a creator may make per 24 h; init then refuses spam_risk_too_many_posts",
    )
    enforce_rate_limits: bool = knob(
        True,
        "switch",
        "the documented per-token limits: 6/min per init endpoint, 30/min status, "
        "20/min creator info (429 rate_limit_exceeded)",
    )
    access_token_lifetime_s: float = knob(
        DAY_S, "non_negative", "seconds an issued (or refreshed) access token lives"
    )
    refresh_token_lifetime_s: float = knob(
        365 * DAY_S, "non_negative", "seconds an issued refresh token lives"
    )
    rotate_refresh_tokens: bool = knob(
        True,
        "switch",
        "each refresh issues a new refresh token and the used one stops working "
        "(off: the same refresh token keeps working)",
    )
    down: bool = knob(
        False,
        "switch",
        "the whole platform is down: every platform call answers 503 from the edge and does"
        " nothing (health, ledger and fault routes still answer)",
    )
    seed: int | None = knob(
        None, "seed", "make each key's fault sequence reproducible (unset: random)"
    )

    def __post_init__(self) -> None:
        """Reject values that would make the emulation meaningless."""
        check_knobs(self)


KNOBS: Final[tuple[Knob, ...]] = knobs_of(TikTokFaults)
# What `POST /faults/reset` restores, and what a fresh `TikTokFaults()` holds.
DEFAULTS: Final[dict[str, float | int | str | None]] = defaults_of(TikTokFaults)
