"""Opaque keyset cursors: `?cursor=&limit=` and `{"items", "nextCursor"}`."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Final, TypeVar

from fastapi import Query
from fastapi.responses import Response
from sqlalchemy import Select
from sqlalchemy.orm import Session

from api.presenters import json_response
from api.schemas import storable
from shared.kit.errors import Validation

T = TypeVar("T")

DEFAULT_LIMIT: Final = 50
MAX_LIMIT: Final = 100

Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Page size, 1..100")]
Cursor = Annotated[
    str | None, Query(max_length=512, description="`nextCursor` from the previous page")
]


def encode(at: datetime, row_id: str) -> str:
    """A cursor pointing just past (at, row_id)."""
    raw = json.dumps([at.isoformat(), row_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(cursor: str | None) -> tuple[datetime, str] | None:
    """The (time, id) a cursor points past; 422 on anything we did not mint."""
    if not cursor:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at, row_id = json.loads(raw)
        when = datetime.fromisoformat(at)
        if not isinstance(row_id, str) or when.tzinfo is None:
            raise ValueError
        return when, storable(row_id)
    except (ValueError, TypeError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise Validation.at("cursor", "Invalid cursor") from exc


def page(
    rows: list[T], limit: int, key: Callable[[T], tuple[datetime, str]]
) -> tuple[list[T], str | None]:
    """The first `limit` of `limit + 1` fetched rows, and the cursor past them if more exist."""
    items = rows[:limit]
    return items, encode(*key(items[-1])) if len(rows) > limit else None


def listing(
    session: Session,
    query: Callable[[tuple[datetime, str] | None], Select[T]],
    cursor: str | None,
    limit: int,
    *,
    key: Callable[[T], tuple[datetime, str]],
    render: Callable[[T], dict[str, Any]],
) -> Response:
    """One page of a keyset-paginated list: `{"items", "nextCursor"}`. `query` builds the
    ordered query past a position (None: the first page); `key` is that order's position."""
    rows = list(session.scalars(query(decode(cursor)).limit(limit + 1)))
    items, next_cursor = page(rows, limit, key)
    return json_response({"items": [render(r) for r in items], "nextCursor": next_cursor})
