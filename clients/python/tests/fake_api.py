"""The unit tier's fake API: an httpx.MockTransport answering from a script,
recording every request, and a client whose waits are recorded instead of slept."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from layers_client import Layers

BASE = "https://api.test"
Step = httpx.Response | Exception | Callable[[httpx.Request], httpx.Response]


def envelope(
    status: int,
    code: str,
    details: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    request_id: str = "req_fake",
) -> httpx.Response:
    """An error answer as the API makes it."""
    body = {
        "error": {
            "code": code,
            "message": f"{code} message",
            "requestId": request_id,
            "details": details or {},
        }
    }
    return httpx.Response(
        status, json=body, headers={"X-Request-Id": request_id, **(headers or {})}
    )


def ok(body: Any, status: int = 200, request_id: str = "req_ok") -> httpx.Response:
    return httpx.Response(status, json=body, headers={"X-Request-Id": request_id})


@dataclass
class FakeAPI:
    """Answers each request with the next step of `script` (an exception is raised as the
    transport's), or with `default` once the script is spent."""

    script: list[Step] = field(default_factory=list)
    default: Step | None = None
    requests: list[httpx.Request] = field(default_factory=list)
    sleeps: list[float] = field(default_factory=list)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        step = self.script.pop(0) if self.script else self.default
        if step is None:
            raise AssertionError(f"unexpected request {request.method} {request.url}")
        if isinstance(step, Exception):
            raise step
        if callable(step) and not isinstance(step, httpx.Response):
            return step(request)
        return step

    def client(self, **kw: Any) -> Layers:
        kw.setdefault("rng", random.Random(7))
        return Layers(
            api_key="lp_test_key1_secret",
            base_url=BASE,
            transport=httpx.MockTransport(self.handle),
            sleep=self.sleeps.append,
            **kw,
        )

    def body(self, i: int = -1) -> Any:
        content = self.requests[i].content
        return json.loads(content) if content else None


POST = {
    "id": "sp_4c8e7d2f-9a1b-4c3d-8e7f-2a1b3c4d5e60",
    "containerId": "cnt_1",
    "socialAccountId": "sa_1",
    "platform": "tiktok",
    "mode": "publish",
    "status": "queued",
    "scheduledFor": "2031-06-01T09:00:00Z",
    "attemptedAt": None,
    "publishedAt": None,
    "canceledAt": None,
    "externalId": None,
    "externalUrl": None,
    "lastError": None,
    "createdAt": "2026-04-18T19:22:41Z",
    "updatedAt": "2026-04-18T19:22:41Z",
}
CONTAINER = {
    "id": "cnt_1",
    "projectId": "prj_1",
    "status": "completed",
    "caption": "Launch day",
    "media": [{"url": "https://cdn.example.com/launch.mp4", "type": "video"}],
    "approval": None,
    "createdAt": "2026-04-18T19:22:41Z",
}
INTENT = {
    "id": "si_1",
    "containerId": "cnt_1",
    "status": "blocked",
    "scheduledFor": "2031-06-01T09:00:00Z",
    "targets": [
        {
            "socialAccountId": "sa_1",
            "mode": "publish",
            "scheduledPostId": None,
            "captionOverride": None,
            "firstCommentOverride": None,
        }
    ],
    "scheduledPostIds": [],
    "lastError": None,
    "createdAt": "2026-04-18T19:22:41Z",
    "updatedAt": "2026-04-18T19:22:41Z",
}
ACCOUNT = {
    "id": "sa_1",
    "projectId": "prj_1",
    "platform": "tiktok",
    "handle": "acme",
    "status": "connected",
    "statusReason": None,
    "connectedAt": "2026-04-18T19:22:41Z",
    "tokenExpiresAt": None,
    "avatarUrl": None,
    "createdAt": "2026-04-18T19:22:41Z",
}
ENDPOINT = {
    "id": "we_1",
    "url": "https://hooks.example.com/layers",
    "description": None,
    "eventTypes": ["post.published"],
    "status": "enabled",
    "consecutiveFailures": 0,
    "previousSecretExpiresAt": None,
    "createdAt": "2026-04-18T19:22:41Z",
    "updatedAt": "2026-04-18T19:22:41Z",
}
DELIVERY = {
    "id": "wd_1",
    "endpointId": "we_1",
    "eventId": "evt_1",
    "eventType": "test.ping",
    "replayOf": None,
    "status": "succeeded",
    "attempts": [
        {
            "number": 1,
            "startedAt": "2026-04-18T19:22:41Z",
            "durationMs": 12,
            "statusCode": 200,
            "error": None,
        }
    ],
    "nextAttemptAt": None,
    "deliveredAt": "2026-04-18T19:22:42Z",
    "createdAt": "2026-04-18T19:22:41Z",
}
