"""`iter_*` yields every item of every page, sending each page's cursor with the same
filters, and stops on the page whose `nextCursor` is null."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fake_api import ACCOUNT, DELIVERY, ENDPOINT, INTENT, POST, FakeAPI, ok

from layers_client import Layers, LayersError


def pages(item: dict[str, Any], sizes: list[int]) -> list[httpx.Response]:
    out = []
    n = 0
    for i, size in enumerate(sizes):
        items = [item | {"id": f"{item['id']}-{n + k}"} for k in range(size)]
        n += size
        cursor = f"c{i + 1}" if i + 1 < len(sizes) else None
        out.append(ok({"items": items, "nextCursor": cursor}))
    return out


def test_scheduled_posts_across_pages_keep_their_filters(fake: FakeAPI, layers: Layers) -> None:
    fake.script = list(pages(POST, [2, 2, 1]))
    got = list(
        layers.publishing.iter_scheduled_posts(
            project_id="prj_1", status="queued", social_account_id="sa_1", limit=2
        )
    )
    assert [p.id for p in got] == [f"{POST['id']}-{i}" for i in range(5)]
    queries = [dict(r.url.params) for r in fake.requests]
    assert [q.get("cursor") for q in queries] == [None, "c1", "c2"]
    assert all(
        q["status"] == "queued" and q["socialAccountId"] == "sa_1" and q["limit"] == "2"
        for q in queries
    )


@pytest.mark.parametrize(
    ("item", "walk"),
    [
        (ACCOUNT, lambda c: c.social.iter_accounts(project_id="prj_1", platform="tiktok")),
        (INTENT, lambda c: c.publishing.iter_schedule_intents(container_id="cnt_1")),
        (ENDPOINT, lambda c: c.webhooks.iter_endpoints(limit=1)),
        (DELIVERY, lambda c: c.webhooks.iter_deliveries(endpoint_id="we_1")),
    ],
)
def test_every_list_iterates(fake: FakeAPI, layers: Layers, item: Any, walk: Any) -> None:
    fake.script = list(pages(item, [1, 3, 0]))
    assert len(list(walk(layers))) == 4
    assert len(fake.requests) == 3


def test_a_page_is_fetched_only_when_reached(fake: FakeAPI, layers: Layers) -> None:
    fake.script = list(pages(POST, [2, 2]))
    walk = layers.publishing.iter_scheduled_posts(project_id="prj_1")
    assert fake.requests == []
    next(walk)
    next(walk)
    assert len(fake.requests) == 1


def test_a_cursor_answered_twice_stops_the_walk(fake: FakeAPI, layers: Layers) -> None:
    fake.default = ok({"items": [POST], "nextCursor": "same"})
    with pytest.raises(LayersError, match="same cursor"):
        list(layers.publishing.iter_scheduled_posts(project_id="prj_1"))
    assert len(fake.requests) == 2


def test_a_loop_of_cursors_stops_the_walk(fake: FakeAPI, layers: Layers) -> None:
    # c1 -> c2 -> c1: never the same cursor twice in a row, still a walk without an end.
    fake.script = [ok({"items": [POST], "nextCursor": c}) for c in ("c1", "c2", "c1")]
    with pytest.raises(LayersError, match="same cursor"):
        list(layers.publishing.iter_scheduled_posts(project_id="prj_1"))
    assert len(fake.requests) == 3
