"""Rate-limit tiers: what one key may spend a minute in each endpoint class, and what one
organization may write a day. The one table of the contract's numbers; a key's or an
organization's own limit wins over its tier's."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Final

from shared.kit.errors import Validation

if TYPE_CHECKING:  # the CLI's parser reads the names without loading the models
    from shared.models import ApiKey, Organization


class EndpointClass(enum.StrEnum):
    """Each route is declared as one (api/endpoint_classes.py); each has its own bucket."""

    READ_LIGHT = "read-light"
    WRITE_LIGHT = "write-light"
    LONG_RUNNING = "long-running"

    @property
    def writes(self) -> bool:
        """Whether a request of this class counts against its organization's daily cap."""
        return self is not EndpointClass.READ_LIGHT


class Tier(enum.StrEnum):
    STANDARD = "standard"
    PILOT = "pilot"
    PARTNER = "partner"


@dataclass(frozen=True)
class Limits:
    """Requests per minute per key in each class, and writes per UTC day per organization."""

    read_light: int
    write_light: int
    long_running: int
    daily_writes: int

    def per_minute(self, klass: EndpointClass) -> int:
        """This class's requests per minute."""
        return {
            EndpointClass.READ_LIGHT: self.read_light,
            EndpointClass.WRITE_LIGHT: self.write_light,
            EndpointClass.LONG_RUNNING: self.long_running,
        }[klass]


TIERS: Final[Mapping[Tier, Limits]] = MappingProxyType(
    {
        Tier.STANDARD: Limits(read_light=120, write_light=60, long_running=20, daily_writes=10_000),
        Tier.PILOT: Limits(
            read_light=1_200, write_light=600, long_running=60, daily_writes=100_000
        ),
        Tier.PARTNER: Limits(
            read_light=6_000, write_light=3_000, long_running=300, daily_writes=500_000
        ),
    }
)

# The key's column holding its own limit of each class (None: its tier's).
OVERRIDE_COLUMNS: Final[Mapping[EndpointClass, str]] = MappingProxyType(
    {
        EndpointClass.READ_LIGHT: "rate_limit_read",
        EndpointClass.WRITE_LIGHT: "rate_limit_write",
        EndpointClass.LONG_RUNNING: "rate_limit_long_running",
    }
)


def tier_named(value: str) -> Tier:
    """The tier called `value`, or a 422 naming the tiers there are."""
    try:
        return Tier(value)
    except ValueError:
        raise Validation.at("tier", f"tier must be one of {', '.join(Tier)}") from None


def checked_limit(path: str, value: int | None) -> int | None:
    """`value` if it is a limit one may set (a positive number, or None for the tier's)."""
    if value is not None and value < 1:
        raise Validation.at(path, f"{path} must be a positive number")
    return value


def key_override(key: ApiKey, klass: EndpointClass) -> int | None:
    """The key's own limit of this class, if it has one."""
    value: int | None = getattr(key, OVERRIDE_COLUMNS[klass])
    return value


def limits_of(key: ApiKey, organization: Organization, *, scale: int = 1) -> Limits:
    """What `key` may spend: its own limits over its tier's, and its organization's daily
    cap (the organization's own over its tier's). `scale` (RATE_LIMIT_MULTIPLIER) lifts the
    tiers' figures only: a limit set on a key or an organization is meant as written."""
    tier = TIERS[Tier(key.tier)]
    per_minute = {
        klass: own
        if (own := key_override(key, klass)) is not None
        else tier.per_minute(klass) * scale
        for klass in EndpointClass
    }
    cap = organization.daily_write_cap
    return Limits(
        read_light=per_minute[EndpointClass.READ_LIGHT],
        write_light=per_minute[EndpointClass.WRITE_LIGHT],
        long_running=per_minute[EndpointClass.LONG_RUNNING],
        daily_writes=cap
        if cap is not None
        else TIERS[Tier(organization.tier)].daily_writes * scale,
    )
