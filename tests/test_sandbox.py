"""Tests for the sandbox platform server."""

import argparse
import asyncio
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

import sandbox.server
from cli.main import build_parser, main
from harness.stack import ROOT, Stack
from sandbox.faults import DEFAULTS, KNOBS, Faults
from sandbox.server import FaultsUpdate, create_app
from tests.emulators import non_default


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
    [
        ({"caption": "x" * 2201}, "caption_too_long"),
        ({"media": []}, "media_required"),
        # The rules of shared/publishing/platform_rules.py, which schedule answers 422 with.
        (
            {"platform": "tiktok", "media": [{"url": "a.mp4", "type": "video"}] * 2},
            "media_not_supported",
        ),
        (
            {
                "platform": "tiktok",
                "media": [{"url": "a.mp4", "type": "video"}, {"url": "b.jpg", "type": "image"}],
            },
            "media_not_supported",
        ),
        (
            {"platform": "instagram", "media": [{"url": "b.jpg", "type": "image"}] * 11},
            "media_not_supported",
        ),
    ],
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


# --- Faults reproducible per idempotency key -------------------------------------------------

# Every fault on, with jitter so that concurrent requests finish out of order.
SEEDED = {
    "latency_jitter_ms": 5.0,
    "rate_429": 0.2,
    "rate_503": 0.2,
    "rate_400": 0.15,
    "rate_lost": 0.3,
    "rate_lookup_503": 0.4,
}
KEYS = [f"post-{i:02d}" for i in range(16)]
# What each key does, in this order: posts and lookups by key, as a retrying caller would.
SCRIPT = ["post", "lookup", "post", "post", "lookup", "post", "post", "lookup"]


def _step(request: str, key: str) -> dict[str, Any]:
    """The keyword arguments of one request of SCRIPT for `key`."""
    if request == "post":
        return {
            "method": "POST",
            "url": "/v1/posts",
            "json": _body(),
            "headers": {"Idempotency-Key": key},
        }
    return {"method": "GET", "url": f"/v1/posts/{key}"}


def _outcome(response: httpx.Response) -> str:
    """A response without its random parts (external ids, timestamps)."""
    body = response.json()
    code = body["error"]["code"] if "error" in body else "ok"
    return f"{response.status_code} {code}"


Outcomes = dict[str, list[str]]


def _in_sequence(client: TestClient | httpx.Client, keys: list[str]) -> Outcomes:
    """One key after the other, each key's script from start to end."""
    out: Outcomes = {}
    for key in keys:
        out[key] = [_outcome(client.request(**_step(r, key))) for r in SCRIPT]
    return out


def _round_robin(client: TestClient, keys: list[str]) -> Outcomes:
    """The first request of every key, then the second of every key, and so on."""
    out: Outcomes = {key: [] for key in keys}
    for request in SCRIPT:
        for key in keys:
            out[key].append(_outcome(client.request(**_step(request, key))))
    return out


def _with_asyncio(faults: Faults) -> Outcomes:
    """Every key at once on one event loop, in process: the jitter interleaves them."""

    async def run() -> Outcomes:
        transport = httpx.ASGITransport(app=create_app(faults))
        async with httpx.AsyncClient(transport=transport, base_url="http://sandbox") as client:

            async def one(key: str) -> list[str]:
                return [_outcome(await client.request(**_step(r, key))) for r in SCRIPT]

            results = await asyncio.gather(*(one(key) for key in KEYS))
        return dict(zip(KEYS, results, strict=True))

    return asyncio.run(run())


def _with_threads(base_url: str) -> Outcomes:
    """Every key at once, each from its own thread, over HTTP."""
    barrier = threading.Barrier(len(KEYS))
    out: Outcomes = {}
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker(key: str) -> None:
        try:
            with httpx.Client(base_url=base_url, timeout=10) as client:
                barrier.wait()
                outcomes = _in_sequence(client, [key])
            with lock:
                out.update(outcomes)
        except BaseException as exc:
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=worker, args=(key,)) for key in KEYS]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    return out


def test_seeded_faults_are_the_same_per_key_in_any_order() -> None:
    faults = Faults(**SEEDED, seed=11)
    expected = _in_sequence(_client(faults), KEYS)
    # The fixed seed gives a fixed pattern; make sure it exercises every fault.
    seen = {outcome for outcomes in expected.values() for outcome in outcomes}
    assert {
        "201 ok",
        "200 ok",
        "404 not_found",
        "429 rate_limited",
        "503 unavailable",
        "502 bad_gateway",
        "400 rejected_by_platform",
    } <= seen
    assert len({tuple(outcomes) for outcomes in expected.values()}) > 1

    assert _in_sequence(_client(faults), list(reversed(KEYS))) == expected
    assert _round_robin(_client(faults), KEYS) == expected
    assert _with_asyncio(faults) == expected


def test_seeded_faults_are_the_same_per_key_from_concurrent_threads(live_server: str) -> None:
    expected = _in_sequence(_client(Faults(**SEEDED, seed=11)), KEYS)
    # The live server starts with its own faults: replace every one of them.
    httpx.post(f"{live_server}/faults/reset").raise_for_status()
    httpx.put(f"{live_server}/faults", json={**SEEDED, "seed": 11}).raise_for_status()
    assert _with_threads(live_server) == expected
    ledger = httpx.get(f"{live_server}/ledger").json()
    assert ledger["requests"] == len(KEYS) * SCRIPT.count("post")


def test_a_different_seed_gives_a_different_pattern() -> None:
    one = _in_sequence(_client(Faults(**SEEDED, seed=11)), KEYS)
    two = _in_sequence(_client(Faults(**SEEDED, seed=12)), KEYS)
    assert one != two
    assert _in_sequence(_client(Faults(**SEEDED, seed=12)), KEYS) == two


def test_lookups_do_not_shift_a_keys_post_faults() -> None:
    """Each endpoint counts its own requests per key: lookups in between leave the POSTs'
    faults as they were."""
    faults = Faults(**SEEDED, seed=5)

    def posts(client: TestClient, lookups_between: int) -> list[str]:
        out = []
        for _ in range(6):
            out.append(_outcome(_post(client, "k")))
            for _ in range(lookups_between):
                client.get("/v1/posts/k")
        return out

    assert posts(_client(faults), 0) == posts(_client(faults), 3)


def test_ledger_reset_and_a_new_seed_start_every_key_again() -> None:
    client = _client(Faults(**SEEDED, seed=11))
    first = _in_sequence(client, KEYS)
    client.post("/ledger/reset")
    assert _in_sequence(client, KEYS) == first
    client.put("/faults", json={"seed": 12})
    client.post("/ledger/reset")
    second = _in_sequence(client, KEYS)
    client.put("/faults", json={"seed": 11})
    client.post("/ledger/reset")
    assert second != first
    assert _in_sequence(client, KEYS) == first


def test_unseeded_faults_are_random() -> None:
    # 64 coin flips per app: the odds of two apps agreeing by chance are 2**-64.
    def pattern() -> list[int]:
        client = _client(Faults(rate_429=0.5))
        return [_post(client, f"k{i}").status_code for i in range(64)]

    first = pattern()
    assert set(first) == {201, 429}
    assert pattern() != first


# --- One definition of the knobs --------------------------------------------------------------


NON_DEFAULTS = {knob.name: non_default(knob) for knob in KNOBS}


def test_knobs_are_the_faults_fields() -> None:
    assert [knob.name for knob in KNOBS] == list(Faults.__dataclass_fields__)
    assert Faults() == Faults(**DEFAULTS)
    assert list(FaultsUpdate.model_fields) == [knob.name for knob in KNOBS]
    assert all(NON_DEFAULTS[name] != default for name, default in DEFAULTS.items())


def test_faults_reset_restores_every_knob() -> None:
    client = _client()
    assert client.get("/faults").json() == DEFAULTS
    assert client.put("/faults", json=NON_DEFAULTS).json() == NON_DEFAULTS
    assert client.get("/faults").json() == NON_DEFAULTS
    response = client.post("/faults/reset")
    assert response.status_code == 200
    assert response.json() == DEFAULTS
    assert client.get("/faults").json() == DEFAULTS


def test_harness_reset_restores_every_knob_and_the_ledger(live_server: str, tmp_path: Path) -> None:
    stack = Stack(
        database_url="unused", sandbox_port=int(live_server.rsplit(":", 1)[1]), logdir=tmp_path
    )
    # Every knob off its default but `down`, under which no request reaches the platform.
    httpx.put(f"{live_server}/faults", json=NON_DEFAULTS | {"down": False}).raise_for_status()
    for key in ("a", "b", "c", "d"):
        httpx.post(f"{live_server}/v1/posts", json=_body(), headers={"Idempotency-Key": key})
    assert stack.ledger()["requests"] == 4
    stack.reset_sandbox()
    assert httpx.get(f"{live_server}/faults").json() == DEFAULTS
    assert stack.ledger() == {"posts": [], "requests": 0}


def test_put_faults_rejects_a_body_that_is_not_json() -> None:
    client = _client()
    response = client.put(
        "/faults", content=b"rate_429=1", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_request"
    assert client.get("/faults").json() == DEFAULTS


def _sandbox_parser() -> argparse.ArgumentParser:
    parser = build_parser()
    (sub,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    sandbox_parser: argparse.ArgumentParser = sub.choices["sandbox"]
    return sandbox_parser


def test_cli_has_a_flag_for_every_knob(monkeypatch: pytest.MonkeyPatch) -> None:
    options = {
        option: action for action in _sandbox_parser()._actions for option in action.option_strings
    }
    assert set(options) == {"-h", "--help", "--host", "--port"} | {k.flag for k in KNOBS}
    for knob in KNOBS:
        assert options[knob.flag].dest == knob.name
        assert options[knob.flag].default == knob.default
        assert options[knob.flag].help

    # And `publisher sandbox` hands every one of them to the server.
    served: list[Faults] = []
    monkeypatch.setattr(sandbox.server, "serve", lambda _h, _p, faults: served.append(faults))
    argv = ["sandbox"]
    for knob in KNOBS:
        argv += [knob.flag, str(NON_DEFAULTS[knob.name])]
    assert main(argv) == 0
    assert served == [Faults(**NON_DEFAULTS)]


def test_readme_lists_every_knob() -> None:
    readme = (ROOT / "README.md").read_text()
    usage = re.search(r"^publisher sandbox (.*?)^publisher ", readme, re.M | re.S)
    assert usage is not None
    assert set(re.findall(r"\[(--[a-z0-9-]+)", usage.group(1))) == {"--port"} | {
        knob.flag for knob in KNOBS
    }
    section = readme.split("## The sandbox platform", 1)[1].split("\n## ", 1)[0]
    listed = section.split("- Faults, as flags", 1)[1].split("\n- ", 1)[0]
    assert set(re.findall(r"`([a-z0-9_]+)`", listed)) >= {knob.name for knob in KNOBS}
