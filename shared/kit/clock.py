"""Wall-clock time in UTC, and the wire format for it."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def iso(value: datetime | None) -> str | None:
    """ISO 8601 UTC with a `Z`, to the second (`2026-04-18T19:22:41Z`), or None."""
    if value is None:
        return None
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def ceil_second(value: datetime) -> datetime:
    """`value` rounded up to a whole second: the resolution of `scheduledFor`, never earlier."""
    if value.microsecond == 0:
        return value
    return value.replace(microsecond=0) + timedelta(seconds=1)


# An ISO 8601 duration in weeks, or days and a time part: no years or months, whose length
# depends on the calendar, and whole seconds only.
_DURATION = re.compile(
    r"P(?:(\d{1,4})W|(?:(\d{1,5})D)?(?:T(?:(\d{1,6})H)?(?:(\d{1,7})M)?(?:(\d{1,9})S)?)?)"
)


def parse_duration(text: str) -> timedelta:
    """`PT2H`, `P1D`, `P1DT12H`, `P2W` as a timedelta; ValueError for anything else."""
    match = _DURATION.fullmatch(text)
    if match is None or text in ("P", "PT") or text.endswith("T"):
        raise ValueError(
            "must be an ISO 8601 duration in weeks, days, hours, minutes or seconds (PT2H, P1D)"
        )
    weeks, days, hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
    return timedelta(weeks=weeks, days=days, hours=hours, minutes=minutes, seconds=seconds)


def format_duration(value: timedelta) -> str:
    """The shortest ISO 8601 form of a whole-second duration: `P1DT2H`, `PT90S` as `PT1M30S`."""
    total = int(value.total_seconds())
    days, rest = divmod(total, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, seconds = divmod(rest, 60)
    out = "P" + (f"{days}D" if days else "")
    clock = "".join(f"{n}{unit}" for n, unit in ((hours, "H"), (minutes, "M"), (seconds, "S")) if n)
    if clock or not days:
        out += "T" + (clock or "0S")
    return out
