"""Prefixed resource ids (`sp_<uuid>`): typed on the wire, checked before they reach SQL."""

from __future__ import annotations

import uuid
from typing import Final

ORG: Final = "org"
PROJECT: Final = "prj"
CONTAINER: Final = "cnt"
SOCIAL_ACCOUNT: Final = "sa"
SCHEDULED_POST: Final = "sp"
SCHEDULE_INTENT: Final = "si"
API_KEY: Final = "key"
WEBHOOK_ENDPOINT: Final = "we"
WEBHOOK_DELIVERY: Final = "wd"


def new_id(prefix: str) -> str:
    """A fresh id with its type prefix."""
    return f"{prefix}_{uuid.uuid4()}"


def is_valid(value: str, prefix: str) -> bool:
    """True when `value` is `<prefix>_<canonical uuid>`; anything else is simply not found."""
    head, sep, tail = value.partition("_")
    if not sep or head != prefix or len(tail) != 36:
        return False
    try:
        return str(uuid.UUID(tail)) == tail
    except ValueError:
        return False
