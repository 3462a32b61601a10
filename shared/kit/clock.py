"""Wall-clock time in UTC, and the wire format for it."""

from __future__ import annotations

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
