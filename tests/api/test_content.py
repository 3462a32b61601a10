"""Content containers (docs/api.md): upload, media type inference, and reading one back."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from shared.kit.clock import utcnow
from tests.api.helpers import ISO_Z, UUID_ID, _parse
from tests.checks import count as _count
from tests.factories import TenantFixture


@pytest.mark.parametrize(
    ("url", "declared", "expected"),
    [
        ("https://cdn.example.com/clip.mp4", None, "video"),
        ("https://cdn.example.com/CLIP.MOV?sig=abc.jpg", None, "video"),
        ("https://cdn.example.com/a.m4v", None, "video"),
        ("https://cdn.example.com/a.webm#t=10", None, "video"),
        ("https://cdn.example.com/photo.jpg", None, "image"),
        ("https://cdn.example.com/clip.mp4.png", None, "image"),
        ("https://cdn.example.com/still.jpg", "video", "video"),
        ("https://cdn.example.com/clip.mp4", "image", "image"),
    ],
)
def test_upload_creates_a_container_and_infers_media_type(
    client: TestClient, tenant: TenantFixture, url: str, declared: str | None, expected: str
) -> None:
    media: dict[str, Any] = {"url": url} if declared is None else {"url": url, "type": declared}
    before = utcnow().replace(microsecond=0)
    r = client.post(
        f"/v1/projects/{tenant.project_id}/content/upload",
        headers=tenant.headers,
        json={"caption": "Launch day", "media": [media, {"url": "https://cdn.example.com/b.png"}]},
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert set(body) == {"id", "projectId", "status", "caption", "media", "approval", "createdAt"}
    assert body["approval"] is None
    match = UUID_ID.match(body["id"])
    assert match and match["prefix"] == "cnt"
    assert body["projectId"] == tenant.project_id
    assert body["status"] == "completed"
    assert body["caption"] == "Launch day"
    assert body["media"] == [
        {"url": url, "type": expected},
        {"url": "https://cdn.example.com/b.png", "type": "image"},
    ]
    assert ISO_Z.match(body["createdAt"])
    assert before <= _parse(body["createdAt"]) <= utcnow()

    got = client.get(f"/v1/content/{body['id']}", headers=tenant.headers)
    assert got.status_code == 200
    assert got.json() == body
    assert _count("content_containers") == 1
