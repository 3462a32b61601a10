"""The platform emulators served over real HTTP in the test's own process, what their tests
share (the fake clock, scripted clients driven in any order, the knob and CLI checks), and
tenants whose Instagram account the emulator issued: for tests of the emulators, the adapter
and the protocol against them."""

from __future__ import annotations

import argparse
import asyncio
import socket
import threading
import time
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from types import ModuleType
from typing import Any, ClassVar, TypeVar

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from cli.main import build_parser, main
from sandbox import tiktok
from sandbox.faults import Knob, defaults_of, knobs_of
from sandbox.instagram import create_app
from sandbox.instagram_faults import InstagramFaults
from sandbox.tiktok_faults import TikTokFaults
from shared.accounts.accounts import (
    IssuedAccount,
    add_issued_account,
    emulator_instagram_account,
    emulator_tiktok_account,
)
from shared.accounts.credentials import Credentials
from shared.content.containers import create_container, get_project
from shared.events import Actor
from shared.kit.clock import utcnow
from shared.kit.db import transaction
from shared.models import INSTAGRAM_ADAPTER, Platform
from shared.publishing import posts
from shared.tenancy.tenants import create_tenant
from tests.factories import TenantFixture, fixture_of


@dataclass
class Served:
    """A running emulator: its base URL and app (whose state a test may read)."""

    url: str
    app: FastAPI

    def set_faults(self, **knobs: Any) -> None:
        httpx.put(f"{self.url}/faults", json=knobs).raise_for_status()

    def ledger(self) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = httpx.get(f"{self.url}/ledger").json()["posts"]
        return entries


class FakeClock:
    """An emulator's clock in tests: time moves only when told; waits are recorded."""

    def __init__(self) -> None:
        self.t = 1_750_000_000.0
        self.slept: list[float] = []

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        # Yield, so concurrent calls on one event loop interleave as real waits would.
        await asyncio.sleep(0)

    def advance(self, seconds: float) -> None:
        self.t += seconds


@contextmanager
def served(app: FastAPI) -> Iterator[Served]:
    """An emulator app on a free port, until the block ends."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="critical", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 5
    while not server.started:
        assert time.monotonic() < deadline, "the emulator did not start"
        time.sleep(0.01)
    try:
        yield Served(f"http://127.0.0.1:{port}", app)
    finally:
        server.should_exit = True
        thread.join(timeout=5)
        sock.close()


@contextmanager
def served_instagram(**knobs: Any) -> Iterator[Served]:
    """An Instagram emulator with these knobs on a free port, until the block ends."""
    with served(create_app(InstagramFaults(**knobs))) as emulator:
        yield emulator


@contextmanager
def served_tiktok(**knobs: Any) -> Iterator[Served]:
    """A TikTok emulator with these knobs on a free port, until the block ends."""
    with served(tiktok.create_app(TikTokFaults(**knobs))) as emulator:
        yield emulator


# --- What the emulators' tests share ---------------------------------------------------------

Step = dict[str, Any]
# A client's requests for one key, and their outcomes without the random parts.
Script = Generator[Step, httpx.Response, list[str]]
Outcomes = dict[str, list[str]]
T = TypeVar("T")
# The faults every emulator has, on for the seeded tests; jitter (a yield on the fake clock)
# so that concurrent calls interleave.
SEEDED_FAULTS: dict[str, Any] = {
    "latency_jitter_ms": 5.0,
    "rate_limited": 0.15,
    "rate_server_error": 0.1,
    "rate_lost": 0.15,
}


def drive(
    scripts: dict[str, Script], send: Callable[[Step], httpx.Response], *, rounds: bool
) -> Outcomes:
    """Run every key's script, one key after the other or one step of each key in turn."""
    out: Outcomes = {}
    pending = {key: (s, next(s)) for key, s in scripts.items()}
    while pending:
        for key in list(pending) if rounds else list(pending)[:1]:
            s, step = pending[key]
            while True:
                try:
                    following = s.send(send(step))
                except StopIteration as done:
                    out[key] = done.value
                    del pending[key]
                    break
                pending[key] = (s, following)
                step = following
                if rounds:
                    break
    return out


def drive_concurrently(app: FastAPI, scripts: dict[str, Script]) -> Outcomes:
    """Run every key's script at once on one event loop, against the app in process."""

    async def run() -> Outcomes:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://emulator") as client:

            async def one(s: Script) -> list[str]:
                step = next(s)
                while True:
                    try:
                        step = s.send(await client.request(**step))
                    except StopIteration as done:
                        result: list[str] = done.value
                        return result

            results = await asyncio.gather(*(one(s) for s in scripts.values()))
        return dict(zip(scripts, results, strict=True))

    return asyncio.run(run())


def all_at_once(n: int, work: Callable[[], T]) -> list[T]:
    """`work` in n threads let go together; what each returned (any failure re-raised)."""
    barrier = threading.Barrier(n)
    results: list[T] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker() -> None:
        try:
            barrier.wait()
            result = work()
        except BaseException as exc:
            with lock:
                errors.append(exc)
        else:
            with lock:
                results.append(result)

    threads = [threading.Thread(target=worker) for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    assert len(results) == n, "a thread did not finish"
    return results


def drive_from_threads(url: str, scripts: dict[str, Script]) -> Outcomes:
    """Run every key's script in its own thread over real HTTP, all started together."""
    pending = list(scripts.items())
    lock = threading.Lock()

    def one() -> Outcomes:
        with lock:
            key, s = pending.pop()
        with httpx.Client(base_url=url, timeout=10) as client:
            return drive({key: s}, lambda step: client.request(**step), rounds=False)

    out: Outcomes = {}
    for result in all_at_once(len(scripts), one):
        out.update(result)
    return out


class SeededTests:
    """The seeded-fault tests of an emulator, run by a `TestSeeded` subclass in its test
    module: with a seed, each key sees the same faults however its calls interleave with
    other keys' (one key after another, in turns, on one event loop, from threads over real
    HTTP); another seed gives another pattern; POST /ledger/reset replays it."""

    # The knobs with every fault on, the keys, the seed, another seed, and the outcomes (but
    # their HTTP status) the seed must show among the keys', so every fault is exercised.
    seeded: ClassVar[dict[str, Any]]
    keys: ClassVar[list[str]]
    seeds: ClassVar[tuple[int, int]]
    every_fault: ClassVar[frozenset[str]]

    def script(self, key: str) -> Script:
        """What a retrying client does for one key."""
        raise NotImplementedError

    def app(self, **knobs: Any) -> FastAPI:
        """A fresh emulator with these knobs and a fake clock."""
        raise NotImplementedError

    def in_sequence(self, client: TestClient, keys: list[str], *, rounds: bool = False) -> Outcomes:
        """Every key's outcomes, one key after the other (or one step of each in turn)."""
        scripts = {key: self.script(key) for key in keys}
        return drive(scripts, lambda step: client.request(**step), rounds=rounds)

    def client(self, seed: int) -> TestClient:
        return TestClient(self.app(**self.seeded, seed=seed))

    def test_seeded_faults_are_the_same_per_key_in_any_order(self) -> None:
        seed = self.seeds[0]
        expected = self.in_sequence(self.client(seed), self.keys)
        seen = {o.split(" ", 1)[1] for outcomes in expected.values() for o in outcomes}
        assert self.every_fault <= seen, seen
        assert len({tuple(o) for o in expected.values()}) > 1

        assert self.in_sequence(self.client(seed), list(reversed(self.keys))) == expected
        assert self.in_sequence(self.client(seed), self.keys, rounds=True) == expected
        scripts = {key: self.script(key) for key in self.keys}
        assert drive_concurrently(self.app(**self.seeded, seed=seed), scripts) == expected

    def test_a_different_seed_gives_a_different_pattern_and_ledger_reset_replays(self) -> None:
        one = self.in_sequence(self.client(self.seeds[0]), self.keys)
        client = self.client(self.seeds[1])
        two = self.in_sequence(client, self.keys)
        assert one != two
        client.post("/ledger/reset")
        assert self.in_sequence(client, self.keys) == two

    def test_seeded_faults_are_the_same_per_key_from_concurrent_threads(self) -> None:
        expected = self.in_sequence(self.client(self.seeds[0]), self.keys)
        with served(self.app(**self.seeded, seed=self.seeds[0])) as emulator:
            scripts = {key: self.script(key) for key in self.keys}
            assert drive_from_threads(emulator.url, scripts) == expected


def non_default(knob: Knob) -> Any:
    """A valid value of the knob other than its default."""
    if knob.kind == "choice":
        return next(c for c in knob.choices if c != knob.default)
    if knob.kind == "switch":
        return not knob.default
    if knob.kind == "rate":
        return 0.5
    if knob.kind in ("seed", "count"):
        return 7
    assert isinstance(knob.default, float)
    return knob.default + 1.5


def bad_values(knob: Knob) -> list[dict[str, Any]]:
    """PUT /faults bodies that set the knob to a value it must refuse: the wrong type, null
    (but for the seed), or out of its range."""
    wrong: list[Any] = ["not-a-value"]
    if knob.kind != "seed":
        wrong.append(None)
    wrong += {
        "rate": [1.5, -0.1],
        "non_negative": [-1],
        "count": [-1, 2.5],
        "switch": [1, "yes"],
        "seed": [1.5],
    }.get(knob.kind, [])
    return [{knob.name: value} for value in wrong]


def put_faults(client: TestClient, **knobs: Any) -> None:
    """Set knobs with PUT /faults, which must take them."""
    response = client.put("/faults", json=knobs)
    assert response.status_code == 200, response.text


def emulator_parser(name: str) -> argparse.ArgumentParser:
    """The parser of `publisher emulator <name>`."""
    parser = build_parser()
    (sub,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    emulator: argparse.ArgumentParser = sub.choices["emulator"]
    (actions,) = (a for a in emulator._actions if isinstance(a, argparse._SubParsersAction))
    chosen: argparse.ArgumentParser = actions.choices[name]
    return chosen


# What a probe sees of an emulator (its env) and one account of it, for one knob.
Probe = Callable[[Any, Any], object]


class KnobTests:
    """The knob tests of an emulator, run by a `TestKnobs` subclass in its test module that
    names the knobs, the probes, and how to make an emulator and an account.

    A probe is, per knob: the other knobs it needs on, a value other than the default, and
    what it observes (which that value must change, and POST /faults/reset restore)."""

    knobs_class: ClassVar[Callable[..., Any]]
    probes: ClassVar[dict[str, tuple[dict[str, Any], Any, Probe]]]
    # What a PUT /faults with a bad value is answered (in the form `error_of` gives).
    refusal: ClassVar[object]
    # `publisher emulator <name>`, its default port, and the module whose `serve` it runs.
    cli: ClassVar[tuple[str, int, ModuleType]]

    @property
    def knobs(self) -> tuple[Knob, ...]:
        return knobs_of(self.knobs_class)

    @property
    def defaults(self) -> dict[str, Any]:
        return defaults_of(self.knobs_class)

    def env(self) -> Any:
        """A fresh emulator in process (with a `client`)."""
        raise NotImplementedError

    def account(self, env: Any) -> Any:
        """A new account of that emulator."""
        raise NotImplementedError

    def error_of(self, response: httpx.Response) -> object:
        """What an error answer says, in the form of `refusal`."""
        raise NotImplementedError

    def test_every_knob_has_a_probe(self) -> None:
        assert set(self.probes) == {knob.name for knob in self.knobs}
        fields = list(self.knobs_class.__dataclass_fields__)
        assert [knob.name for knob in self.knobs] == fields
        assert self.knobs_class() == self.knobs_class(**self.defaults)

    def test_every_knob_has_an_observable_effect_and_resets(self) -> None:
        for name, (needs, value, probe) in self.probes.items():
            assert value != self.defaults[name]
            env = self.env()

            def observe(env: Any = env, probe: Probe = probe) -> object:
                return probe(env, self.account(env))

            put_faults(env.client, **needs)
            before = observe()
            put_faults(env.client, **{name: value})
            assert env.client.get("/faults").json()[name] == value
            changed = observe()
            assert env.client.post("/faults/reset").json() == self.defaults
            put_faults(env.client, **needs)
            after = observe()
            assert changed != before, f"{name}={value!r} changed nothing: {changed!r}"
            assert after == before, f"{name} did not reset: {after!r} != {before!r}"

    def test_faults_reset_restores_every_knob(self) -> None:
        client = self.env().client
        values = {knob.name: non_default(knob) for knob in self.knobs}
        assert client.get("/faults").json() == self.defaults
        assert client.put("/faults", json=values).json() == values
        assert client.post("/faults/reset").json() == self.defaults
        assert client.get("/faults").json() == self.defaults

    def test_put_faults_rejects_bad_values(self) -> None:
        client = self.env().client
        updates = [{"no_such_knob": 0.5}] + [u for knob in self.knobs for u in bad_values(knob)]
        for update in updates:
            assert self.error_of(client.put("/faults", json=update)) == self.refusal, update
            assert client.get("/faults").json() == self.defaults

    def test_cli_has_a_flag_for_every_knob(self, monkeypatch: pytest.MonkeyPatch) -> None:
        name, port, module = self.cli
        options = {
            option: action
            for action in emulator_parser(name)._actions
            for option in action.option_strings
        }
        flags = {k.flag for k in self.knobs}
        assert set(options) == {"-h", "--help", "--host", "--port"} | flags
        assert options["--port"].default == port
        for knob in self.knobs:
            assert options[knob.flag].dest == knob.name
            assert options[knob.flag].default == knob.default
            assert options[knob.flag].help

        served: list[tuple[str, int, Any]] = []
        monkeypatch.setattr(module, "serve", lambda h, p, knobs: served.append((h, p, knobs)))
        values = {knob.name: non_default(knob) for knob in self.knobs}
        argv = ["emulator", name, "--port", "9999"]
        for knob in self.knobs:
            argv += [knob.flag, str(values[knob.name])]
        assert main(argv) == 0
        assert served == [("127.0.0.1", 9999, self.knobs_class(**values))]


def instagram_tenant(name: str, instagram_url: str, user_id: str | None = None) -> TenantFixture:
    """A tenant whose Instagram account the emulator issued (its TikTok one is sandbox-bound).
    A fixed `user_id` makes a seeded emulator's faults the same on every run: the user id is
    part of each call's fault key."""
    if user_id is None:
        issued = emulator_instagram_account(instagram_url, timeout=5)
    else:
        body = httpx.post(f"{instagram_url}/emulator/accounts", json={"userId": user_id}).json()
        issued = IssuedAccount(
            body["userId"],
            body["username"],
            Credentials(body["accessToken"]),
            float(body["expiresIn"]),
            INSTAGRAM_ADAPTER,
            instagram_url,
        )
    with transaction() as tx:
        t = create_tenant(
            tx.session,
            name,
            [Platform.TIKTOK.value, Platform.INSTAGRAM.value],
            sandbox_url="http://127.0.0.1:8900",
            issued={Platform.INSTAGRAM.value: issued},
        )
    return fixture_of(t)


def more_instagram_accounts(tenant: TenantFixture, instagram_url: str, n: int) -> list[str]:
    """n more emulator-issued Instagram accounts in the tenant's project: their ids."""
    issued = [emulator_instagram_account(instagram_url, timeout=5) for _ in range(n)]
    return _add_accounts(tenant, Platform.INSTAGRAM.value, issued)


def more_tiktok_accounts(tenant: TenantFixture, tiktok_url: str, n: int) -> list[str]:
    """n more emulator-issued TikTok creators in the tenant's project: their ids."""
    issued = [emulator_tiktok_account(tiktok_url, timeout=5) for _ in range(n)]
    return _add_accounts(tenant, Platform.TIKTOK.value, issued)


def _add_accounts(tenant: TenantFixture, platform: str, issued: list[IssuedAccount]) -> list[str]:
    with transaction() as tx:
        accounts = [
            add_issued_account(
                tx.session, tenant.organization_id, tenant.project_id, platform, account
            )
            for account in issued
        ]
        tx.session.flush()
        return [a.id for a in accounts]


IMAGE = ("https://cdn.example.com/photo.jpg", "image")
VIDEO = ("https://cdn.example.com/clip.mp4", "video")


def due_post(
    tenant: TenantFixture,
    caption: str,
    media: list[tuple[str, str | None]] | None = None,
    platform: str = Platform.INSTAGRAM.value,
    account_id: str | None = None,
) -> tuple[str, int]:
    """One post due now with a task token (counted as sent an hour ahead, so a running
    stack's dispatcher leaves it to the test): (post id, token)."""
    now = utcnow() - timedelta(seconds=1)
    actor = Actor(tenant.organization_id, tenant.key_id, "test")
    with transaction() as tx:
        project = get_project(tx.session, tenant.organization_id, tenant.project_id)
        container = create_container(tx.session, project, caption, media or [IMAGE], now=now)
        scheduled = posts.schedule(
            tx.session,
            actor,
            container,
            now,
            [posts.Target(account_id or tenant.accounts[platform])],
            now=utcnow() + timedelta(hours=1),
            task_id_for_now=True,
        )
    dispatch = scheduled.dispatches[0]
    return dispatch.post_id, dispatch.token
