"""The Instagram emulator's knobs, defined once: its faults, and the timings and limits the
Graph API documents but has changed over time (or a test needs shorter).

`InstagramFaults` is built with the sandbox's knob machinery (sandbox/faults.py): `KNOBS`
and `DEFAULTS` here, the body of `PUT /faults` and `POST /faults/reset`
(sandbox/instagram.py), and the `publisher emulator instagram` flags are all derived from
it. With no flags the emulator is fault-free and answers with the documented defaults.

Light to import on purpose (the standard library only): every CLI call builds the parser.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from sandbox.faults import Knob, check_knobs, defaults_of, knob, knobs_of

DAY_S: Final = 86_400.0
# The documented rate-limit codes: app (4), user (17), page (32), per-call (613), and the
# Instagram business-use-case limit (80002).
RATE_LIMIT_CODES: Final = (4, 17, 32, 613, 80002)


@dataclass
class InstagramFaults:
    """Knobs of the Instagram emulator; every rate is an independent probability per call."""

    latency_ms: float = knob(0.0, "non_negative", "delay every Graph call by this many ms")
    latency_jitter_ms: float = knob(
        0.0, "non_negative", "and by up to this many ms more, drawn per call"
    )
    publish_latency_ms: float = knob(
        0.0, "non_negative", "delay media_publish by this many ms more, before it publishes"
    )
    rate_limited: float = knob(
        0.0, "rate", "probability a Graph call is refused with a rate-limit error (no effect)"
    )
    rate_limit_code: int = knob(
        4, "choice", "the Graph code of those rate-limit errors", choices=RATE_LIMIT_CODES
    )
    rate_server_error: float = knob(
        0.0,
        "rate",
        "probability a Graph call other than media_publish answers 500, code 2 / 2207001 "
        "(no effect)",
    )
    rate_server_error_publish: float = knob(
        0.0, "rate", "probability media_publish answers 500, code 2 / 2207001 (nothing posted)"
    )
    rate_lost: float = knob(
        0.0,
        "rate",
        "probability a Graph call other than media_publish is carried out but its answer is lost",
    )
    rate_lost_publish: float = knob(
        0.0, "rate", "probability media_publish is carried out (posts) but its answer is lost"
    )
    lost_response: str = knob(
        "502",
        "choice",
        "how an answer is lost: a 502 from the edge, or the connection cut mid-answer",
        choices=("502", "cut"),
    )
    rate_container_error: float = knob(
        0.0, "rate", "probability a new container ends in ERROR instead of FINISHED"
    )
    image_processing_s: float = knob(
        0.2, "non_negative", "seconds an image (or carousel) container stays IN_PROGRESS"
    )
    video_processing_s: float = knob(
        1.0, "non_negative", "seconds a video container stays IN_PROGRESS"
    )
    container_lifetime_s: float = knob(
        DAY_S, "non_negative", "seconds until an unpublished container is EXPIRED"
    )
    duplicate_publish: str = knob(
        "refuse",
        "choice",
        "media_publish of a container already PUBLISHED: refuse it, or post it again",
        choices=("refuse", "post"),
    )
    quota_total: int = knob(50, "count", "posts an account may publish per quota window")
    quota_duration_s: float = knob(DAY_S, "non_negative", "the quota's moving window, in seconds")
    token_lifetime_s: float = knob(
        60 * DAY_S, "non_negative", "seconds an issued (or refreshed) access token lives"
    )
    refresh_min_age_s: float = knob(
        DAY_S, "non_negative", "a token can be refreshed once it is this many seconds old"
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


KNOBS: Final[tuple[Knob, ...]] = knobs_of(InstagramFaults)
# What `POST /faults/reset` restores, and what a fresh `InstagramFaults()` holds.
DEFAULTS: Final[dict[str, float | int | str | None]] = defaults_of(InstagramFaults)
