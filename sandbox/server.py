"""Sandbox platform server: a stand-in for TikTok/Instagram in development and tests.

It answers like a real platform (latency, 429s, 5xx, lost responses, permanent rejections)
and keeps an in-memory ledger of every post it actually created, so tests can assert on
what the platform *received* rather than on what the caller *believes* happened.

Also the pieces the platform emulators (sandbox/instagram.py, sandbox/tiktok.py) share: the
knob routes (`add_fault_routes`, `update_model`), per-key seeded draws (`request_rng`,
`DrawCounter`), the clock they read (`Clock`, `SystemClock`), and the fault pipeline of one
call (`EmulatedCalls`: latency, a refusal, a server error, the effect, a lost answer).
"""

import asyncio
import dataclasses
import hashlib
import json
import random
import secrets
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal, Protocol
from urllib.parse import quote

import uvicorn
from fastapi import FastAPI, Header, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError, create_model
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Receive, Scope, Send

from sandbox.faults import KNOBS, Faults, Knob
from shared.publishing import platform_rules

MAX_IDEMPOTENCY_KEY_CHARS = 255

Platform = Literal["tiktok", "instagram"]
Mode = Literal["publish", "draft"]

_ID_PREFIX: dict[str, str] = {"tiktok": "tt_", "instagram": "ig_"}

Endpoint = Literal["post", "lookup"]


@dataclass(frozen=True)
class PostDraws:
    """Every random number one POST /v1/posts may use, drawn up front and always all of them,
    so a request's faults don't depend on which rates happen to be non-zero."""

    latency: float
    rate_429: float
    rate_503: float
    rate_400: float
    rate_lost: float


@dataclass(frozen=True)
class LookupDraws:
    """Every random number one GET /v1/posts/{key} may use."""

    latency: float
    rate_lookup_503: float


def request_rng(seed: int | None, endpoint: str, key: str, index: int) -> random.Random:
    """The RNG of one request: the `index`-th (from 0) that `key` made to `endpoint`.

    Seeded, it is a function of (seed, endpoint, key, index) alone, so each key sees the same
    fault sequence however its requests interleave with other keys'. Unseeded, it is random.
    """
    if seed is None:
        return random.Random()  # seeded from os.urandom
    material = json.dumps([seed, endpoint, key, index]).encode()
    return random.Random(int.from_bytes(hashlib.sha256(material).digest(), "big"))


class DrawCounter:
    """How many requests each idempotency key has made to each endpoint: the index of the
    next request's draws."""

    def __init__(self) -> None:
        """Start with every key at 0."""
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str], int] = {}

    def next(self, endpoint: str, key: str) -> int:
        """The index of this request (0 for a key's first), counted."""
        with self._lock:
            index = self._counts.get((endpoint, key), 0)
            self._counts[endpoint, key] = index + 1
            return index

    def reset(self) -> None:
        """Every key starts its sequence again."""
        with self._lock:
            self._counts.clear()


# --- What the emulators share: their clock, and the faults of one call ------------------------


class Clock(Protocol):
    """Where an emulator reads the time and waits: injectable, so tests never sleep."""

    def now(self) -> float:
        """Seconds since the epoch."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait (the injected latency)."""
        ...


class SystemClock:
    """The real time."""

    def now(self) -> float:
        """Seconds since the epoch."""
        return time.time()

    async def sleep(self, seconds: float) -> None:
        """Wait for real."""
        await asyncio.sleep(seconds)


@dataclass(frozen=True)
class CallDraws:
    """Every random number one emulated call may use, drawn up front and always all of them,
    so a call's faults don't depend on which rates happen to be non-zero. `outcome` is what
    the call's effect may draw on (whether a new container, or a new post, fails)."""

    latency: float
    rate_limited: float
    server_error: float
    lost: float
    outcome: float


@dataclass(frozen=True)
class CallFaults:
    """The knobs that apply to one call: its latency and how likely each fault is."""

    latency_ms: float
    jitter_ms: float
    rate_limited: float
    rate_server_error: float
    rate_lost: float
    lost_response: str

    @classmethod
    def of(cls, knobs: Any, point_of_no_return: str | None = None) -> "CallFaults":
        """A call's faults from an emulator's knobs (`latency_ms`, `latency_jitter_ms`,
        `rate_limited`, `rate_server_error`, `rate_lost`, `lost_response`). The call that is
        the point of no return (`publish`, `init`) has its own: `<point>_latency_ms` more,
        `rate_server_error_<point>` and `rate_lost_<point>`."""
        point = point_of_no_return
        extra_ms: float = getattr(knobs, f"{point}_latency_ms") if point else 0.0
        return cls(
            latency_ms=knobs.latency_ms + extra_ms,
            jitter_ms=knobs.latency_jitter_ms,
            rate_limited=knobs.rate_limited,
            rate_server_error=getattr(
                knobs, f"rate_server_error_{point}" if point else "rate_server_error"
            ),
            rate_lost=getattr(knobs, f"rate_lost_{point}" if point else "rate_lost"),
            lost_response=knobs.lost_response,
        )


class _CutResponse(Response):
    """The start of an answer, then nothing: the connection is cut mid-body."""

    def __init__(self, original: Response) -> None:
        super().__init__(status_code=original.status_code)
        self.raw_headers = original.raw_headers
        self.original_body = bytes(original.body)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        half = self.original_body[: len(self.original_body) // 2]
        await send({"type": "http.response.body", "body": half, "more_body": True})
        # Returning with the body incomplete makes the server drop the connection.


def lost_answer(original: Response, how: str) -> Response:
    """The answer the caller gets when the real one is lost on the way: a 502 from the edge
    whose body is not the platform's (`how` = "502"), or the connection cut ("cut")."""
    if how == "cut":
        return _CutResponse(original)
    return Response(
        status_code=502,
        content="<html><body><h1>502 Bad Gateway</h1></body></html>",
        media_type="text/html",
    )


class EmulatedCalls:
    """The faults of an emulator's calls, seeded per (seed, call, key, how many calls that key
    made before), and the order they apply in: the latency, then a refusal (rate limited),
    then a server error (either way nothing happened), then the call's effect, whose answer
    may then be lost (it happened all the same)."""

    def __init__(self, clock: Clock) -> None:
        """Every key's sequence at its start."""
        self.clock = clock
        self.draws = DrawCounter()

    def draw(self, seed: int | None, call: str, key: str) -> tuple[CallDraws, int | None]:
        """The draws of one call, and its index in its key's sequence (None unseeded)."""
        # Unseeded draws are random anyway: no need to count (or remember) every key.
        index = self.draws.next(call, key) if seed is not None else None
        rng = request_rng(seed, call, key, index or 0)
        values = CallDraws(
            latency=rng.random(),
            rate_limited=rng.random(),
            server_error=rng.random(),
            lost=rng.random(),
            outcome=rng.random(),
        )
        return values, index

    async def run(
        self,
        values: CallDraws,
        faults: CallFaults,
        *,
        limited: Callable[[], Response],
        server_error: Callable[[], Response],
        answer: Callable[[], Response],
    ) -> Response:
        """One call through its faults; `answer` carries it out (and renders its errors)."""
        delay_ms = faults.latency_ms + values.latency * faults.jitter_ms
        if delay_ms > 0:
            await self.clock.sleep(delay_ms / 1000.0)
        if values.rate_limited < faults.rate_limited:
            return limited()
        if values.server_error < faults.rate_server_error:
            return server_error()
        # From here to the answer there is no await: the effect is one locked step.
        response = answer()
        if values.lost < faults.rate_lost:
            return lost_answer(response, faults.lost_response)
        return response

    async def call(
        self,
        knobs: Any,
        call: str,
        key: str,
        *,
        point_of_no_return: str | None,
        limited: Callable[[], Response],
        server_error: Callable[[], Response],
        answer: Callable[[CallDraws, int | None], Response],
    ) -> Response:
        """One call of `key`, drawn and run with the faults `knobs` give it (`CallFaults.of`);
        `answer` gets the call's draws and its index in its key's sequence."""
        values, index = self.draw(knobs.seed, call, key)
        return await self.run(
            values,
            CallFaults.of(knobs, point_of_no_return),
            limited=limited,
            server_error=server_error,
            answer=lambda: answer(values, index),
        )


class EmulatedPlatform(Protocol):
    """What an emulator's own routes read and reset."""

    def ledger(self) -> list[dict[str, Any]]:
        """Every post the platform made, in order."""
        ...

    def reset(self) -> None:
        """Forget the posts (and what counts them), not the accounts or tokens."""
        ...


# Routes of the emulator itself, never down: what tests and the chaos run read and steer.
_OWN_ROUTES: Final = ("/healthz", "/ledger", "/faults")


def add_outage(app: FastAPI, knobs: Any) -> None:
    """While `knobs.down` is on, every platform call answers what a platform behind a load
    balancer answers when it is down: a 503 from the edge, not the platform's own error body,
    and nothing done. The emulator's own routes still answer."""

    @app.middleware("http")
    async def outage(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        if knobs.down and not request.url.path.startswith(_OWN_ROUTES):
            return Response(
                status_code=503,
                content="<html><body><h1>503 Service Unavailable</h1></body></html>",
                media_type="text/html",
            )
        return await call_next(request)


def emulator_app(
    title: str,
    knobs: Any,
    platform: EmulatedPlatform,
    calls: EmulatedCalls,
    update: type[BaseModel],
    *,
    invalid: Callable[[str], JSONResponse],
) -> FastAPI:
    """A platform emulator's app with its own routes, never faulty: `GET /healthz`, `GET
    /ledger`, `POST /ledger/reset`, and the knob routes (`add_fault_routes`). Registered
    first, so no route of the platform's (`/{node_id}`) shadows them."""
    app = FastAPI(title=title, version="1")
    # Only ever mutated in place, so references held by tests stay live.
    app.state.platform = platform
    app.state.faults = knobs
    app.state.draws = calls.draws

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """Liveness probe."""
        return {"status": "ok"}

    @app.get("/ledger")
    async def get_ledger() -> dict[str, Any]:
        """Every post the platform made, in order, captions verbatim."""
        return {"posts": platform.ledger()}

    @app.post("/ledger/reset", status_code=204)
    async def reset_ledger() -> Response:
        """Forget the posts (and what counts them: quotas, caps, rate windows), not accounts
        or tokens; every key's fault sequence starts again."""
        platform.reset()
        calls.draws.reset()
        return Response(status_code=204)

    add_fault_routes(app, knobs, update, reseed=calls.draws.reset, invalid=invalid)
    add_outage(app, knobs)
    return app


@dataclass(frozen=True)
class StoredPost:
    """A post the sandbox platform created, as recorded in the ledger."""

    idempotency_key: str
    external_id: str
    external_url: str
    platform: str
    mode: str
    account_id: str
    received_at: str

    def to_json(self) -> dict[str, str]:
        """Render the body returned by POST/GET /v1/posts."""
        return {
            "idempotencyKey": self.idempotency_key,
            "externalId": self.external_id,
            "externalUrl": self.external_url,
            "platform": self.platform,
            "mode": self.mode,
            "accountId": self.account_id,
            "receivedAt": self.received_at,
        }

    def to_ledger_json(self) -> dict[str, str]:
        """Render the entry shown by GET /ledger."""
        return {
            "idempotencyKey": self.idempotency_key,
            "externalId": self.external_id,
            "platform": self.platform,
            "mode": self.mode,
            "receivedAt": self.received_at,
            "accountId": self.account_id,
        }


class Ledger:
    """Thread-safe in-memory store of created posts (by idempotency key) and a request count."""

    def __init__(self) -> None:
        """Start with an empty ledger."""
        self._lock = threading.Lock()
        # dicts keep insertion order, which gives us creation order for GET /ledger for free.
        self._posts: dict[str, StoredPost] = {}
        self._requests = 0

    def count_request(self) -> int:
        """Record one POST /v1/posts and return the new total."""
        with self._lock:
            self._requests += 1
            return self._requests

    @property
    def requests(self) -> int:
        """Number of POST /v1/posts requests that reached the handler."""
        with self._lock:
            return self._requests

    def get(self, idempotency_key: str) -> StoredPost | None:
        """Return the post stored under a key, if any."""
        with self._lock:
            return self._posts.get(idempotency_key)

    def insert_if_absent(self, post: StoredPost) -> tuple[StoredPost, bool]:
        """Store the post unless its key is taken; return (stored post, created)."""
        # Check and insert under one lock acquisition: this is the exactly-once guarantee.
        with self._lock:
            existing = self._posts.get(post.idempotency_key)
            if existing is not None:
                return existing, False
            self._posts[post.idempotency_key] = post
            return post, True

    def posts(self) -> list[StoredPost]:
        """All stored posts in creation order."""
        with self._lock:
            return list(self._posts.values())

    def snapshot(self) -> tuple[list[StoredPost], int]:
        """Posts and request count read atomically with respect to each other."""
        with self._lock:
            return list(self._posts.values()), self._requests

    def reset(self) -> None:
        """Forget all posts and zero the request counter."""
        with self._lock:
            self._posts.clear()
            self._requests = 0


class MediaItem(BaseModel):
    """One media attachment of a post."""

    url: str = Field(min_length=1)
    type: str | None = None


class PostRequest(BaseModel):
    """Body of POST /v1/posts."""

    account_id: str = Field(alias="accountId", min_length=1)
    platform: Platform
    mode: Mode
    caption: str
    media: list[MediaItem]
    first_comment: str | None = Field(default=None, alias="firstComment")


def _update_field(knob: Knob) -> Any:
    # Non-optional types (but the seed's) so an explicit null is rejected.
    if knob.kind == "choice":
        return Literal[knob.choices]
    return {"seed": int | None, "count": int, "switch": StrictBool}.get(knob.kind, float)


def update_model(name: str, knobs: tuple[Knob, ...]) -> type[BaseModel]:
    """The body of PUT /faults for these knobs: one optional field per knob."""
    # Defaults are never applied: the handler only reads the fields the client set. A typo in
    # a knob name must fail loudly, otherwise a test silently runs fault-free.
    fields: dict[str, Any] = {
        knob.name: (_update_field(knob), Field(default=knob.default, description=knob.help))
        for knob in knobs
    }
    model: type[BaseModel] = create_model(
        name,
        __config__=ConfigDict(extra="forbid"),
        __doc__="Body of PUT /faults; only the fields actually sent are applied.",
        **fields,
    )
    return model


FaultsUpdate: Final[type[BaseModel]] = update_model("FaultsUpdate", KNOBS)


def add_fault_routes(
    app: FastAPI,
    live: Any,
    update: type[BaseModel],
    *,
    reseed: Callable[[], None],
    invalid: Callable[[str], JSONResponse],
) -> None:
    """GET /faults, PUT /faults and POST /faults/reset on `live`, a knobs dataclass that is
    only ever changed in place. `reseed` starts every key's fault sequence again; `invalid`
    renders a value the knobs refuse, in the app's own error envelope."""
    knobs_class = type(live)

    def apply(merged: Any, *, restart: bool) -> None:
        for field in dataclasses.fields(knobs_class):
            setattr(live, field.name, getattr(merged, field.name))
        if restart:
            reseed()

    @app.get("/faults")
    async def get_faults() -> dict[str, Any]:
        """The fault configuration currently in effect."""
        return dataclasses.asdict(live)

    @app.put(
        "/faults",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": update.model_json_schema()}},
            }
        },
    )
    async def put_faults(request: Request) -> JSONResponse:
        """Change any subset of the fault knobs at runtime. Setting the seed (even to the
        same value) starts every key's fault sequence again."""
        try:
            changes = update.model_validate_json(await request.body()).model_dump(
                exclude_unset=True
            )
        except ValidationError as exc:
            raise RequestValidationError(
                [{**err, "loc": ("body", *err["loc"])} for err in exc.errors()]
            ) from exc
        try:
            # Validate the merged result first so a bad value leaves the live config untouched.
            merged = dataclasses.replace(live, **changes)
        except ValueError as exc:
            return invalid(str(exc))
        apply(merged, restart="seed" in changes)
        return JSONResponse(status_code=200, content=dataclasses.asdict(live))

    @app.post("/faults/reset")
    async def reset_faults() -> JSONResponse:
        """Every knob back to its default: no faults, no latency, no seed."""
        apply(knobs_class(), restart=True)
        return JSONResponse(status_code=200, content=dataclasses.asdict(live))


def _error(
    status_code: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        status_code=status_code,
        content={"error": {"code": code, "message": message}},
        headers=headers,
    )


def _format_seconds(value: float) -> str:
    if value.is_integer():
        return str(int(value))
    return f"{value:.3f}".rstrip("0").rstrip(".")


def iso_ms(t: float) -> str:
    """A time (seconds since the epoch) as the ledgers show it: UTC to the millisecond."""
    moment = datetime.fromtimestamp(t, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _utc_now_iso() -> str:
    return iso_ms(time.time())


def _external_url(platform: str, account_id: str, external_id: str) -> str:
    if platform == "tiktok":
        return f"https://sandbox.tiktok.example/@{quote(account_id, safe='')}/video/{external_id}"
    return f"https://sandbox.instagram.example/p/{external_id}"


def _platform_rule_violation(body: PostRequest) -> tuple[str, str] | None:
    # The same rules the schedule endpoint answers 422 with: the two never disagree.
    if problem := platform_rules.caption_problem(body.platform, body.caption):
        return "caption_too_long", problem
    if not body.media:
        return "media_required", "at least one media item is required"
    if problem := platform_rules.media_problem(body.platform, [m.model_dump() for m in body.media]):
        return "media_not_supported", problem
    return None


def describe_validation_error(exc: RequestValidationError) -> str:
    """A request's validation errors in one line: `body.field: message; ...`."""
    parts = []
    for err in exc.errors():
        location = ".".join(str(part) for part in err.get("loc", ()))
        parts.append(f"{location}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def create_app(faults: Faults | None = None) -> FastAPI:
    """Build a fresh sandbox app with its own Ledger, Faults and draw counters."""
    live_faults = dataclasses.replace(faults) if faults is not None else Faults()
    ledger = Ledger()
    # Each request draws from its own RNG, derived from the seed, its idempotency key and how
    # many requests that key made before it (request_rng): a seeded run gives every key the
    # same fault sequence whatever the concurrency. External ids use `secrets` instead so
    # they never collide across restarts that reuse a seed.
    draws = DrawCounter()

    app = FastAPI(title="Sandbox platform", version="1")
    # These objects are only ever mutated in place, so references held by tests stay live.
    app.state.ledger = ledger
    app.state.faults = live_faults
    app.state.draws = draws

    def rng_for(endpoint: Endpoint, key: str) -> random.Random:
        seed = live_faults.seed
        # Unseeded draws are random anyway: no need to count (or remember) every key.
        index = draws.next(endpoint, key) if seed is not None else 0
        return request_rng(seed, endpoint, key, index)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        # Real platforms answer malformed requests with 400, not FastAPI's 422.
        return _error(400, "invalid_request", describe_validation_error(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Keep one error envelope for every response, including unknown routes and methods.
        codes = {404: "not_found", 405: "method_not_allowed"}
        return _error(
            exc.status_code,
            codes.get(exc.status_code, "http_error"),
            str(exc.detail),
            headers=dict(exc.headers) if exc.headers else None,
        )

    async def _simulate_latency(draw: float) -> None:
        delay_ms = live_faults.latency_ms + draw * live_faults.latency_jitter_ms
        if delay_ms > 0:
            await asyncio.sleep(delay_ms / 1000.0)

    @app.post("/v1/posts", status_code=201)
    async def create_post(
        body: PostRequest,
        idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
    ) -> JSONResponse:
        """Create a post exactly once per idempotency key, subject to injected faults."""
        ledger.count_request()
        rng = rng_for("post", idempotency_key or "")
        draw = PostDraws(
            latency=rng.random(),
            rate_429=rng.random(),
            rate_503=rng.random(),
            rate_400=rng.random(),
            rate_lost=rng.random(),
        )
        await _simulate_latency(draw.latency)

        if (
            idempotency_key is None
            or not idempotency_key.strip()
            or len(idempotency_key) > MAX_IDEMPOTENCY_KEY_CHARS
        ):
            return _error(
                400,
                "missing_idempotency_key",
                f"Idempotency-Key header is required (1-{MAX_IDEMPOTENCY_KEY_CHARS} characters)",
            )

        if draw.rate_429 < live_faults.rate_429:
            retry_after = _format_seconds(live_faults.retry_after_s)
            return _error(
                429,
                "rate_limited",
                f"rate limit exceeded, retry after {retry_after}s",
                headers={"Retry-After": retry_after},
            )
        if draw.rate_503 < live_faults.rate_503:
            return _error(503, "unavailable", "platform temporarily unavailable")

        # From here to insert_if_absent there must be no await: the event loop can't
        # interleave another request for the same key in between.
        existing = ledger.get(idempotency_key)
        if existing is not None:
            return JSONResponse(status_code=200, content=existing.to_json())

        violation = _platform_rule_violation(body)
        if violation is not None:
            return _error(400, *violation)
        if draw.rate_400 < live_faults.rate_400:
            return _error(400, "rejected_by_platform", "the platform rejected this post")

        external_id = _ID_PREFIX[body.platform] + secrets.token_hex(8)
        candidate = StoredPost(
            idempotency_key=idempotency_key,
            external_id=external_id,
            external_url=_external_url(body.platform, body.account_id, external_id),
            platform=body.platform,
            mode=body.mode,
            account_id=body.account_id,
            received_at=_utc_now_iso(),
        )
        stored, created = ledger.insert_if_absent(candidate)
        if not created:
            # Only reachable when the ledger is shared across threads; still a replay.
            return JSONResponse(status_code=200, content=stored.to_json())

        if draw.rate_lost < live_faults.rate_lost:
            return _error(
                502, "bad_gateway", "upstream connection reset before the response was sent"
            )
        return JSONResponse(status_code=201, content=stored.to_json())

    # `:path` so keys containing an (encoded) slash still route here.
    @app.get("/v1/posts/{idempotency_key:path}")
    async def get_post(idempotency_key: str) -> JSONResponse:
        """Look up a post by idempotency key; latency and `rate_lookup_503` apply."""
        rng = rng_for("lookup", idempotency_key)
        draw = LookupDraws(latency=rng.random(), rate_lookup_503=rng.random())
        await _simulate_latency(draw.latency)
        if draw.rate_lookup_503 < live_faults.rate_lookup_503:
            return _error(503, "unavailable", "lookup temporarily unavailable")
        post = ledger.get(idempotency_key)
        if post is None:
            return _error(404, "not_found", "no post with this idempotency key")
        return JSONResponse(status_code=200, content=post.to_json())

    @app.get("/ledger")
    async def get_ledger() -> dict[str, Any]:
        """Everything the platform created, in creation order, plus the POST request count."""
        posts, requests = ledger.snapshot()
        return {"posts": [post.to_ledger_json() for post in posts], "requests": requests}

    @app.post("/ledger/reset", status_code=204)
    async def reset_ledger() -> Response:
        """Clear posts and the request counter; every key's fault sequence starts again."""
        ledger.reset()
        draws.reset()
        return Response(status_code=204)

    add_fault_routes(
        app,
        live_faults,
        FaultsUpdate,
        reseed=draws.reset,
        invalid=lambda message: _error(400, "invalid_request", message),
    )
    add_outage(app, live_faults)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """Liveness probe."""
        return {"status": "ok"}

    return app


def serve(host: str, port: int, faults: Faults) -> None:
    """Run the sandbox platform with uvicorn in this process until interrupted."""
    uvicorn.run(create_app(faults), host=host, port=port, log_level="warning")
