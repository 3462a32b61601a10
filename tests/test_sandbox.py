"""Tests for the sandbox platform server."""

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from sandbox.server import Faults, create_app


def _body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "accountId": "acct_1",
        "platform": "tiktok",
        "mode": "publish",
        "caption": "hello",
        "media": [{"url": "https://cdn.example/v.mp4", "type": "video"}],
    }
    body.update(overrides)
    return body


def _client(faults: Faults | None = None) -> TestClient:
    return TestClient(create_app(faults))


def _post(client: TestClient, key: str, **overrides: Any) -> httpx.Response:
    response: httpx.Response = client.post(
        "/v1/posts", json=_body(**overrides), headers={"Idempotency-Key": key}
    )
    return response


def test_create_then_replay_returns_same_post() -> None:
    client = _client()

    first = _post(client, "k1")
    assert first.status_code == 201
    created = first.json()
    assert created["externalId"].startswith("tt_")
    assert len(created["externalId"]) == len("tt_") + 16
    assert created["externalUrl"].endswith(f"/@acct_1/video/{created['externalId']}")
    assert created["receivedAt"].endswith("Z")
    assert len(created["receivedAt"]) == len("2026-04-18T19:22:41.123Z")

    replay = _post(client, "k1")
    assert replay.status_code == 200
    assert replay.json() == created

    ledger = client.get("/ledger").json()
    assert [p["externalId"] for p in ledger["posts"]] == [created["externalId"]]
    assert ledger["requests"] == 2


def test_instagram_ids_and_urls() -> None:
    created = _post(_client(), "ig", platform="instagram").json()
    assert created["externalId"].startswith("ig_")
    assert created["externalUrl"] == f"https://sandbox.instagram.example/p/{created['externalId']}"


def test_get_post_by_key() -> None:
    client = _client()
    created = _post(client, "abc").json()

    found = client.get("/v1/posts/abc")
    assert found.status_code == 200
    assert found.json() == created

    missing = client.get("/v1/posts/nope")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize("headers", [{}, {"Idempotency-Key": ""}, {"Idempotency-Key": "x" * 256}])
def test_missing_or_bad_idempotency_key(headers: dict[str, str]) -> None:
    client = _client()
    response = client.post("/v1/posts", json=_body(), headers=headers)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "missing_idempotency_key"
    assert client.get("/ledger").json()["posts"] == []


def test_invalid_body_is_400_not_422() -> None:
    client = _client()
    response = _post(client, "k", platform="myspace")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_request"


@pytest.mark.parametrize(
    ("overrides", "code"),
    [({"caption": "x" * 2201}, "caption_too_long"), ({"media": []}, "media_required")],
)
def test_platform_rules_reject_and_store_nothing(overrides: dict[str, Any], code: str) -> None:
    client = _client()
    response = _post(client, "k", **overrides)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == code
    assert client.get("/ledger").json()["posts"] == []
    assert client.get("/v1/posts/k").status_code == 404


def test_caption_at_limit_is_accepted() -> None:
    assert _post(_client(), "k", caption="x" * 2200).status_code == 201


def test_rate_429_sets_retry_after_and_stores_nothing() -> None:
    client = _client(Faults(rate_429=1.0, retry_after_s=0.5))
    response = _post(client, "k")
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "0.5"
    assert response.json()["error"]["code"] == "rate_limited"
    ledger = client.get("/ledger").json()
    assert ledger == {"posts": [], "requests": 1}

    client.put("/faults", json={"retry_after_s": 2})
    assert _post(client, "k").headers["Retry-After"] == "2"


def test_rate_503() -> None:
    client = _client(Faults(rate_503=1.0))
    response = _post(client, "k")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "unavailable"
    assert client.get("/ledger").json()["posts"] == []


def test_rate_400_rejects_but_never_a_replay() -> None:
    client = _client()
    created = _post(client, "k").json()
    assert client.put("/faults", json={"rate_400": 1.0}).status_code == 200

    rejected = _post(client, "other")
    assert rejected.status_code == 400
    assert rejected.json()["error"]["code"] == "rejected_by_platform"

    replay = _post(client, "k")
    assert replay.status_code == 200
    assert replay.json()["externalId"] == created["externalId"]


def test_lost_response_still_creates_post_and_retry_replays() -> None:
    client = _client(Faults(rate_lost=1.0))

    lost = _post(client, "k")
    assert lost.status_code == 502
    assert lost.json()["error"]["code"] == "bad_gateway"

    posts = client.get("/ledger").json()["posts"]
    assert len(posts) == 1
    external_id = posts[0]["externalId"]
    assert client.get("/v1/posts/k").json()["externalId"] == external_id

    assert client.put("/faults", json={"rate_lost": 0.0}).json()["rate_lost"] == 0.0
    retry = _post(client, "k")
    assert retry.status_code == 200
    assert retry.json()["externalId"] == external_id
    assert len(client.get("/ledger").json()["posts"]) == 1


@pytest.mark.parametrize(
    "update",
    [
        {"rate_429": 1.5},
        {"rate_503": -0.1},
        {"latency_ms": -1},
        {"rate_lost": None},
        {"rate_500": 0.5},
        {"rate_400": "lots"},
    ],
)
def test_put_faults_rejects_bad_values(update: dict[str, Any]) -> None:
    client = _client()
    before = client.get("/faults").json()
    response = client.put("/faults", json=update)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_request"
    assert client.get("/faults").json() == before


def test_put_faults_partial_update() -> None:
    client = _client(Faults(rate_503=0.25))
    updated = client.put("/faults", json={"rate_429": 0.5, "seed": 7}).json()
    assert updated["rate_429"] == 0.5
    assert updated["rate_503"] == 0.25
    assert updated["seed"] == 7
    assert client.get("/faults").json() == updated


def test_seed_makes_fault_pattern_reproducible() -> None:
    def pattern(client: TestClient) -> list[int]:
        return [_post(client, f"k{i}").status_code for i in range(20)]

    client = _client(Faults(rate_429=0.5, seed=42))
    first = pattern(client)
    assert set(first) == {201, 429}

    client.post("/ledger/reset")
    client.put("/faults", json={"seed": 42})
    assert pattern(client) == first


def test_faults_constructor_validates_and_normalises() -> None:
    assert Faults(retry_after_s=2).retry_after_s == 2.0
    with pytest.raises(ValueError, match="rate_lost"):
        Faults(rate_lost=2.0)
    with pytest.raises(ValueError, match="latency_jitter_ms"):
        Faults(latency_jitter_ms=-5.0)


def test_reset_and_healthz() -> None:
    client = _client()
    _post(client, "k")
    assert client.post("/ledger/reset").status_code == 204
    assert client.get("/ledger").json() == {"posts": [], "requests": 0}
    assert client.get("/healthz").json() == {"status": "ok"}


def test_ledger_counts_every_post_request() -> None:
    client = _client()
    _post(client, "a")
    _post(client, "a")
    _post(client, "b", media=[])
    client.post("/v1/posts", json=_body())
    ledger = client.get("/ledger").json()
    assert ledger["requests"] == 4
    assert [p["idempotencyKey"] for p in ledger["posts"]] == ["a"]


@pytest.fixture
def live_server() -> Iterator[str]:
    # Latency keeps all concurrent requests in flight together, which is what makes the
    # same-key race real rather than accidentally sequential.
    app = create_app(Faults(latency_ms=100))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 5
    while not server.started:
        assert time.monotonic() < deadline, "sandbox server did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=5)
        sock.close()


def test_concurrent_same_key_creates_exactly_one_post(live_server: str) -> None:
    n = 20
    barrier = threading.Barrier(n)
    results: list[httpx.Response] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker() -> None:
        try:
            with httpx.Client(base_url=live_server, timeout=5) as client:
                barrier.wait()
                response = client.post(
                    "/v1/posts", json=_body(), headers={"Idempotency-Key": "same-key"}
                )
            with lock:
                results.append(response)
        except BaseException as exc:
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)

    assert errors == []
    assert len(results) == n
    statuses = sorted(r.status_code for r in results)
    assert statuses == [200] * (n - 1) + [201]
    assert len({r.json()["externalId"] for r in results}) == 1

    ledger = httpx.get(f"{live_server}/ledger").json()
    assert len(ledger["posts"]) == 1
    assert ledger["posts"][0]["externalId"] == results[0].json()["externalId"]
    assert ledger["requests"] == n
