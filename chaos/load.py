"""The load: dense waves of posts, and cancels, reschedules and reads timed to land just
before, at and just after each post's instant and its claim, from many concurrent clients."""

from __future__ import annotations

import heapq
import itertools
import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

import httpx

from chaos.history import Call, History

MAX_TARGETS = 50
# Reschedules must land >= 30 s ahead; waves are created this far ahead so they can be moved.
LEAD_S = 36.0


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse(ts: str) -> datetime:
    return datetime.fromisoformat(ts.replace("Z", "+00:00"))


@dataclass(order=True)
class _Job:
    at: float
    seq: int
    run: Callable[[], None] = field(compare=False)


@dataclass
class Plan:
    posts: int
    duration_s: float
    seed: int
    wave_every_s: float = 2.0
    cancel_share: float = 0.25
    reschedule_share: float = 0.10
    read_share: float = 0.20
    publish_now_share: float = 0.05


class Client:
    """One API key's view of the API, recording every call into the history."""

    def __init__(self, base_url: str, api_key: str, history: History) -> None:
        self.http = httpx.Client(
            base_url=base_url,
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=30,
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=64),
        )
        self.history = history

    def call(
        self, kind: str, method: str, path: str, post_id: str | None = None, **kw: Any
    ) -> httpx.Response | None:
        sent = time.time()
        try:
            r = self.http.request(method, path, **kw)
        except httpx.HTTPError:
            self.history.record(Call(kind, post_id, sent, time.time(), 0))
            return None
        body = (
            r.json() if r.headers.get("content-type", "").startswith("application/json") else None
        )
        reason = (kw.get("json") or {}).get("reason") if kind == "cancel" else None
        asked = (kw.get("json") or {}).get("scheduledFor") if kind == "reschedule" else None
        self.history.record(
            Call(
                kind,
                post_id,
                sent,
                time.time(),
                r.status_code,
                body if kind in ("cancel", "reschedule") else None,
                reason,
                asked,
            )
        )
        return r


# How long a wave's content upload is retried while the API refuses it (a PostgreSQL restart
# lasts seconds; a wave kept waiting longer is a fault of its own).
UPLOAD_RETRY_S = 120.0


class Load:
    """Runs a Plan against a project's accounts; the post ids it created are in `post_ids`."""

    def __init__(
        self, client: Client, project_id: str, accounts: list[str], plan: Plan, clients: int
    ) -> None:
        self.client = client
        self.project_id = project_id
        self.accounts = accounts
        self.plan = plan
        self.rng = random.Random(plan.seed)
        self.clients = clients
        self.post_ids: list[str] = []
        self.container_ids: list[str] = []
        # Every caption is unique (per run, and in practice across runs): with no idempotency
        # key on Instagram, the checker matches a ledger entry to its post by account and
        # caption. Random, not from `rng`, so the seeded plan draws the same numbers.
        self._run_tag = f"{random.getrandbits(32):08x}"
        self._serial = itertools.count(1)
        self._jobs: list[_Job] = []
        self._seq = 0
        self._lock = threading.Lock()
        self._cv = threading.Condition(self._lock)
        self._done_planning = False

    def _at(self, when: float, run: Callable[[], None]) -> None:
        with self._cv:
            self._seq += 1
            heapq.heappush(self._jobs, _Job(when, self._seq, run))
            self._cv.notify()

    def _client_loop(self) -> None:
        while True:
            with self._cv:
                while True:
                    if not self._jobs:
                        if self._done_planning:
                            return
                        self._cv.wait(0.2)
                        continue
                    wait = self._jobs[0].at - time.time()
                    if wait <= 0:
                        job = heapq.heappop(self._jobs)
                        break
                    self._cv.wait(min(wait, 0.2))
            job.run()

    def _container(self) -> tuple[str, str]:
        """A new content container: its id and its caption (unique, see `_run_tag`). Its
        wave needs it, so a refusal the API says to retry (503 while PostgreSQL restarts,
        429) or no answer is retried as a careful client does: with backoff, under one
        Idempotency-Key, for up to UPLOAD_RETRY_S."""
        caption = f"chaos {self._run_tag}-{next(self._serial)}"
        key = f"chaos-upload-{uuid.uuid4().hex}"
        deadline = time.monotonic() + UPLOAD_RETRY_S
        for attempt in itertools.count():
            r = self.client.call(
                "upload",
                "POST",
                f"/v1/projects/{self.project_id}/content/upload",
                json={"caption": caption, "media": [{"url": "https://cdn.example.com/c.mp4"}]},
                headers={"Idempotency-Key": key},
            )
            if r is not None and r.status_code == 201:
                cid = str(r.json()["id"])
                self.container_ids.append(cid)
                return cid, caption
            retry = r is None or r.status_code in (429, 503)
            assert retry and time.monotonic() < deadline, r and r.text
            # Not from `rng`: the seeded plan draws the same numbers whatever was refused.
            time.sleep(min(2.0, 0.1 * 2**attempt) * random.uniform(0.5, 1.0))
        raise AssertionError("unreachable")

    def _follow_up(self, post: dict[str, Any]) -> None:
        """Cancels, reschedules and reads around this post's instant."""
        pid = post["id"]
        due = parse(post["scheduledFor"]).timestamp()
        roll = self.rng.random()
        p = self.plan
        if roll < p.cancel_share:
            self._at(due + self.rng.uniform(-0.4, 0.4), lambda: self._cancel(pid))
        elif roll < p.cancel_share + p.reschedule_share:
            self._at(due + self.rng.uniform(-1.0, 0.3), lambda: self._reschedule(pid))
        if self.rng.random() < p.read_share:
            self._at(due + self.rng.uniform(-2, 3), lambda: self._read(pid))

    def _cancel(self, pid: str) -> None:
        self.client.call(
            "cancel",
            "DELETE",
            f"/v1/scheduled-posts/{pid}",
            pid,
            json={"reason": f"chaos cancel {self.rng.randrange(10**6)}"},
        )

    def _reschedule(self, pid: str) -> None:
        new = time.time() + self.rng.uniform(31, 40)
        r = self.client.call(
            "reschedule",
            "POST",
            f"/v1/scheduled-posts/{pid}/reschedule",
            pid,
            json={"scheduledFor": iso(new)},
        )
        if r is not None and r.status_code == 200 and self.rng.random() < 0.3:
            # And some moved posts are canceled around their new instant.
            due = parse(r.json()["scheduledFor"]).timestamp()
            self._at(due + self.rng.uniform(-0.4, 0.4), lambda: self._cancel(pid))

    def _read(self, pid: str) -> None:
        self.client.call("read", "GET", f"/v1/scheduled-posts/{pid}", pid)

    def _wave(self, instant: float, count: int) -> None:
        """`count` posts due at `instant`, each account given a container at most once (so
        every post has its own account and caption); publish-now posts on some accounts."""
        cid, caption = self._container()
        publish_now = [a for a in self.accounts if self.rng.random() < self.plan.publish_now_share]
        given: set[str] = set()
        while count > 0:
            free = [a for a in self.accounts if a not in given]
            if not free:  # a wave wider than the accounts: the rest on new content
                cid, caption = self._container()
                given.clear()
                free = list(self.accounts)
            batch = self.rng.sample(free, min(count, MAX_TARGETS, len(free)))
            given.update(batch)
            count -= len(batch)
            r = self.client.call(
                "schedule",
                "POST",
                f"/v1/content/{cid}/schedule",
                json={
                    "scheduledFor": iso(instant),
                    "targets": [{"socialAccountId": a} for a in batch],
                },
            )
            if r is None or r.status_code != 201:
                continue
            for post in r.json()["items"]:
                self.post_ids.append(post["id"])
                self._follow_up(post)
        if publish_now:
            # The same content again on accounts that may have it scheduled already: a caption
            # override of its own keeps each (account, caption) to one post.
            now_caption = f"{caption} now"
            r = self.client.call(
                "publish",
                "POST",
                f"/v1/content/{cid}/publish",
                json={
                    "targets": [
                        {"socialAccountId": a, "captionOverride": now_caption}
                        for a in publish_now[:MAX_TARGETS]
                    ]
                },
            )
            if r is not None and r.status_code == 201:
                for post in r.json()["items"]:
                    self.post_ids.append(post["id"])
                    if self.rng.random() < 0.5:  # a mistaken publish, canceled in the window
                        when = time.time() + self.rng.uniform(0, 34)
                        self._at(when, partial(self._cancel, post["id"]))

    def run(self) -> float:
        """Plan every wave, run the clients until the last job; returns the last post's time."""
        p = self.plan
        waves = max(1, int(p.duration_s / p.wave_every_s))
        per_wave = max(1, p.posts // waves)
        start = time.time()
        last = start
        for k in range(waves):
            instant = float(int(start + LEAD_S + k * p.wave_every_s))
            n = per_wave if k < waves - 1 else max(1, p.posts - per_wave * (waves - 1))
            self._at(instant - LEAD_S, partial(self._wave, instant, n))
            last = instant
        threads = [
            threading.Thread(target=self._client_loop, daemon=True) for _ in range(self.clients)
        ]
        for t in threads:
            t.start()
        # Planning is done once the last wave has been created (it plans its own follow-ups).
        while time.time() < last - LEAD_S + 5:
            time.sleep(0.5)
        while time.time() < last + 45:  # reschedules may move posts up to 40 s later
            time.sleep(0.5)
        with self._cv:
            self._done_planning = True
            self._cv.notify_all()
        for t in threads:
            t.join()
        return last
