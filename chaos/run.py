"""`publisher chaos`: an isolated stack (or --target), load, faults, then the checker."""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import statistics
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Engine, create_engine, func, make_url, select

from chaos import checker
from chaos.faults import RUN_KNOBS, Injector, completion_allowance_s
from chaos.history import FinalPost, History, LedgerEntry, WebhookReceipt
from chaos.load import Client, Load, Plan, parse
from chaos.options import (
    PARTITION_FAULTS_OF,
    PLATFORM_FAULTS_OF,
    PLATFORMS_OF,
    all_faults_of,
    faults_of,
)
from chaos.receiver import Receiver, serving
from harness import netns
from harness.pgcluster import PrivatePostgres
from harness.stack import Stack, wait_until
from shared.events import EventType
from shared.kit.db import drop_database
from shared.models import (
    INSTAGRAM_ADAPTER,
    TERMINAL,
    TIKTOK_ADAPTER,
    ContentContainer,
    DeliveryStatus,
    Event,
    ScheduledPost,
    SocialAccount,
    WebhookDelivery,
)
from shared.publishing.adapters import completes_later

# Short leases and graces so recovery from each fault shows within seconds, not minutes.
CHAOS_ENV = {
    "LEASE_S": "10",
    "REDISPATCH_GRACE_S": "5",
    "REAP_INTERVAL_S": "1",
    "PLATFORM_TIMEOUT_S": "5",
    "PLATFORM_BACKOFF_BASE_S": "0.1",
    "PLATFORM_BACKOFF_CAP_S": "2",
    # One key sends the whole load: every limit times ten million is no limit.
    "RATE_LIMIT_MULTIPLIER": "10000000",
    # Posts TikTok completes on its own are polled after half a second, doubling to 2 s.
    "POLL_FIRST_S": "0.5",
    "POLL_CAP_S": "2",
    # A post the platform is down for tries again within 10 s, so posts go out soon after an
    # outage ends, and invariant 5's bound stays the outage plus that.
    "PLATFORM_OUTAGE_RETRY_CAP_S": "10",
    # Webhook retries within seconds, and no pause: a receiver failing at a wave fails dozens
    # of attempts in a row, and the run checks every delivery arrives. Enough attempts that
    # the flaky receiver (a fifth of retries refused) never makes one abandoned: with six,
    # 0.2^5 per event over ~450 events abandoned one in about one run in seven.
    "WEBHOOK_RETRY_SCHEDULE_S": "0,0.5,1,2,4,4,4,4,4,4,4,4,4,4",
    "WEBHOOK_TIMEOUT_S": "3",
    "WEBHOOK_PAUSE_AFTER": "1000000",
}
# A local run's webhook endpoints take these, on two receivers: one that takes everything,
# one that fails every event's first attempt and a fifth of the others (seeded).
# The outcomes, which invariant 8 checks; not `post.scheduled`, two in three of a run's events
# and never checked, whose deliveries alone outran the webhook worker of a long run on a
# two-core machine.
HOOKED = ["post.published", "post.failed", "post.canceled"]


# The Instagram and the TikTok accounts of an `--adapter emulator` run, each issued by the
# stack's emulator of that platform: a wave wider than this goes out on more than one
# container.
EMULATOR_ACCOUNTS = 24


def _default_db() -> str:
    from shared.kit.settings import get_settings

    return str(make_url(get_settings().database_url).set(database="publisher_chaos"))


def _reset_database(url: str) -> None:
    from shared.kit.migrate import migrate

    drop_database(url)
    migrate(url)


def read_state(history: History, post_ids: list[str], database_url: str) -> None:
    """The final rows of these posts, and every cancel's audit entry, into the history."""
    db = create_engine(database_url)
    with db.connect() as conn:
        rows = conn.execute(
            select(ScheduledPost, SocialAccount.adapter)
            .join(SocialAccount, SocialAccount.id == ScheduledPost.social_account_id)
            .where(ScheduledPost.id.in_(post_ids))
        ).all()
        for row in rows:
            p = row._mapping
            terminal = p["status"] in TERMINAL
            history.posts[p["id"]] = FinalPost(
                p["id"],
                p["status"],
                p["scheduled_for"],
                p["external_id"],
                (p["last_error"] or {}).get("code"),
                (p["canceled_at"] or p["updated_at"]) if terminal else None,
                completes_later(p["adapter"]),
            )
        audit: dict[str, list[str | None]] = {}
        for target, reason in conn.execute(
            select(Event.subject_id, Event.reason).where(Event.type == EventType.POST_CANCELED)
        ).all():
            audit.setdefault(target, []).append(reason)
        history.audit = audit
    db.dispose()


def _read_state_over_api(history: History, client: Client, post_ids: list[str]) -> None:
    for pid in post_ids:
        r = client.http.get(f"/v1/scheduled-posts/{pid}")
        if r.status_code != 200:
            continue
        p = r.json()
        terminal = p["status"] in TERMINAL
        history.posts[pid] = FinalPost(
            pid,
            p["status"],
            parse(p["scheduledFor"]),
            p["externalId"],
            (p["lastError"] or {}).get("code"),
            parse(p["canceledAt"] or p["updatedAt"]) if terminal else None,
        )


def read_ledger(history: History, sandbox_url: str) -> None:
    """What the sandbox platform received, and how many publish requests, into the history."""
    body = httpx.get(f"{sandbox_url.rstrip('/')}/ledger", timeout=60).json()
    history.ledger = [
        LedgerEntry(e["idempotencyKey"], e["externalId"], parse(e["receivedAt"]))
        for e in body["posts"]
    ]
    history.ledger_requests = int(body["requests"])


def emulator_keys(database_url: str, post_ids: list[str]) -> dict[tuple[str, str], str]:
    """(platform user id, caption) -> post id for these posts on Instagram or TikTok. With no
    idempotency key on either, this is how a ledger entry is matched to its post: the harness
    makes each caption unique per account."""
    db = create_engine(database_url)
    keys: dict[tuple[str, str], str] = {}
    with db.connect() as conn:
        rows = conn.execute(
            select(
                ScheduledPost.id,
                ScheduledPost.caption_override,
                ContentContainer.caption,
                SocialAccount.platform_user_id,
            )
            .join(ContentContainer, ContentContainer.id == ScheduledPost.container_id)
            .join(SocialAccount, SocialAccount.id == ScheduledPost.social_account_id)
            .where(
                ScheduledPost.id.in_(post_ids),
                SocialAccount.adapter.in_([INSTAGRAM_ADAPTER, TIKTOK_ADAPTER]),
            )
        ).all()
    db.dispose()
    for post_id, override, caption, user_id in rows:
        key = (str(user_id), override if override is not None else caption)
        if key in keys:
            raise ValueError(f"two posts share account and caption {key}: cannot match them")
        keys[key] = post_id
    return keys


def read_emulator_ledger(
    history: History, emulator_url: str, keys: dict[tuple[str, str], str]
) -> None:
    """A platform emulator's posts into the history, each under the id of the post with its
    account and caption (an entry matching none keeps a key no post has); a TikTok post that
    ended FAILED was never public and is left out. Emulators do not count requests:
    `ledger_requests` is left as it is."""
    body = httpx.get(f"{emulator_url.rstrip('/')}/ledger", timeout=60).json()
    entries = [
        LedgerEntry(
            keys.get((e["accountId"], e["caption"]), f"unmatched:{e['accountId']}:{e['caption']}"),
            e["externalId"],
            parse(e["receivedAt"]),
        )
        for e in body["posts"]
        if e.get("status") != "FAILED"
    ]
    history.ledger += entries


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _reaper_counts(stack: Stack | None) -> Counter[str]:
    counts: Counter[str] = Counter()
    if stack is None:
        return counts
    pattern = re.compile(r"reaper: (\d+) requeued, (\d+) to reconcile, (\d+) failed")
    for log in stack.logdir.glob("worker*.log"):
        for m in pattern.finditer(log.read_text(errors="replace")):
            counts["requeued"] += int(m[1])
            counts["reconciliations"] += int(m[2])
            counts["attempts_exhausted"] += int(m[3])
    return counts


def report(
    history: History,
    verdicts: list[checker.Verdict],
    stack: Stack | None,
    elapsed: float,
    adapter: str,
) -> dict[str, Any]:
    """Totals and percentiles, for people (printed) and machines (JSON)."""
    cancels = [c for c in history.calls if c.kind == "cancel"]
    resched = [c for c in history.calls if c.kind == "reschedule"]
    statuses = Counter(p.status for p in history.posts.values())
    lag_ms = [
        (e.received_at - history.posts[e.idempotency_key].scheduled_for).total_seconds() * 1000
        for e in history.ledger
        if e.idempotency_key in history.posts
    ]
    api_latency = [(c.answered_at - c.sent_at) * 1000 for c in history.calls if c.kind == "cancel"]
    reaper = _reaper_counts(stack)
    keys = Counter(e.idempotency_key for e in history.ledger)
    return {
        "adapter": adapter,
        "elapsedSeconds": round(elapsed, 1),
        "posts": len(history.posts),
        "finalStatus": dict(statuses),
        # Of those, the posts their platform completed on its own (TikTok), by final status.
        "completedLater": dict(
            Counter(p.status for p in history.posts.values() if p.completes_later)
        ),
        "cancels": {
            "won": sum(c.status == 200 for c in cancels),
            "lost": sum(c.status == 409 for c in cancels),
            "other": sum(c.status not in (200, 409) for c in cancels),
        },
        "reschedules": {
            "moved": sum(c.status == 200 for c in resched),
            "refused": sum(c.status == 409 for c in resched),
            "other": sum(c.status not in (200, 409) for c in resched),
        },
        "reads": sum(c.kind == "read" for c in history.calls),
        "apiErrors5xxOrNoAnswer": sum(c.status == 0 or c.status >= 500 for c in history.calls),
        "faults": dict(Counter(f.kind for f in history.faults)),
        "faultsFailedToInject": sum("injection failed" in f.detail for f in history.faults),
        # Publish requests beyond the posts made: only the sandbox counts its requests.
        "platformRetries": (
            None
            if history.ledger_requests is None
            else max(0, history.ledger_requests - len(history.ledger))
        ),
        "ledger": {
            "entries": len(history.ledger),
            "unmatched": sum(n for k, n in keys.items() if k not in history.posts),
            "repeated": sum(n for n in keys.values() if n > 1),
        },
        "reaper": dict(reaper),
        "webhooks": (
            None
            if history.webhooks is None
            else {
                "kept": {name: len(r) for name, r in history.webhooks.items()},
                "pending": history.webhooks_pending,
            }
        ),
        "publishLagMs": {
            "p50": round(_pct(lag_ms, 0.50), 1),
            "p90": round(_pct(lag_ms, 0.90), 1),
            "p99": round(_pct(lag_ms, 0.99), 1),
            "max": round(max(lag_ms, default=0.0), 1),
            "mean": round(statistics.fmean(lag_ms), 1) if lag_ms else 0.0,
        },
        "cancelLatencyMs": {
            "p50": round(_pct(api_latency, 0.5), 1),
            "p99": round(_pct(api_latency, 0.99), 1),
        },
        "invariants": [
            {
                "number": v.number,
                "name": v.name,
                "checked": v.checked,
                "unit": v.unit,
                "violations": len(v.violations),
                "ok": v.ok,
                "note": v.note,
            }
            for v in verdicts
        ],
    }


def _print_report(rep: dict[str, Any], verdicts: list[checker.Verdict]) -> None:
    retries = rep["platformRetries"]
    print(
        f"\nchaos: {rep['posts']:,} posts in {rep['elapsedSeconds']}s — "
        f"final {rep['finalStatus']}"
        + (
            f" (completed later by the platform {rep['completedLater']})"
            if rep["completedLater"]
            else ""
        )
        + "\n"
        f"  cancels won {rep['cancels']['won']:,}, lost {rep['cancels']['lost']:,}; "
        f"reschedules {rep['reschedules']['moved']:,} moved, "
        f"{rep['reschedules']['refused']:,} refused; reads {rep['reads']:,}\n"
        f"  faults {rep['faults']}; platform retries "
        + (f"{retries:,}" if retries is not None else "not countable (the emulator counts none)")
        + "; "
        f"reaper {rep['reaper']}\n"
        f"  publish lag ms p50 {rep['publishLagMs']['p50']} p90 {rep['publishLagMs']['p90']} "
        f"p99 {rep['publishLagMs']['p99']} max {rep['publishLagMs']['max']}; "
        f"cancel latency ms p50 {rep['cancelLatencyMs']['p50']} "
        f"p99 {rep['cancelLatencyMs']['p99']}"
    )
    if rep["webhooks"] is not None:
        print(f"  webhooks kept {rep['webhooks']['kept']}, pending {rep['webhooks']['pending']}")
    for v in verdicts:
        print("  " + v.line())


def _kinds(args: argparse.Namespace) -> list[str]:
    """The fault kinds asked for: by default every kind the adapter takes."""
    if args.faults is None:
        return list(faults_of(args.adapter))
    if args.faults.strip() == "all":
        return list(all_faults_of(args.adapter))
    if args.faults.strip() == "none":
        return []
    return [k.strip() for k in args.faults.split(",") if k.strip()]


def _misuse(args: argparse.Namespace, kinds: list[str]) -> str | None:
    """Why these options cannot make a run (checked before anything starts), or None."""
    valid = all_faults_of(args.adapter)
    unknown = [k for k in kinds if k not in valid]
    if unknown:
        return (
            f"with --adapter {args.adapter} the faults are among {', '.join(valid)}; "
            f"not {', '.join(unknown)}"
        )
    if args.target is None:
        if set(kinds) & set(PARTITION_FAULTS_OF[args.adapter]):
            reason = netns.unavailable()
            if reason is not None:
                return f"the partition faults need network namespaces: {reason}"
        return None
    if args.adapter == "emulator":
        return (
            "--target takes only --adapter sandbox: matching the emulators' ledgers to posts "
            "needs each account's platform user id, which only the database holds"
        )
    if not (args.api_key and args.project and args.sandbox_url):
        return "--target needs --api-key, --project and --sandbox-url"
    platform = PLATFORM_FAULTS_OF[args.adapter]
    if set(kinds) - set(platform):
        return "with --target only platform faults can be injected: " + ", ".join(platform)
    return None


def run(args: argparse.Namespace) -> int:
    """One chaos run; exit 1 on any violation (with each post's full history), 2 on misuse."""
    kinds = _kinds(args)
    problem = _misuse(args, kinds)
    if problem:
        print(f"publisher: {problem}", file=sys.stderr)
        return 2
    emulator = args.adapter == "emulator"
    history = History()
    stack: Stack | None = None
    started = time.time()
    local = args.target is None
    database_url: str | None = args.database_url
    exits = contextlib.ExitStack()
    receivers: dict[str, Receiver] = {}
    cluster: PrivatePostgres | None = None
    namespace: netns.Namespace | None = None
    try:
        if local:
            database_url = database_url or _default_db()
            if "pg_restart" in kinds:
                # The run's own server, to restart: its database named as --database-url's.
                name = make_url(database_url).database or "publisher_chaos"
                cluster = exits.enter_context(PrivatePostgres(name))
                database_url = cluster.url
            _reset_database(database_url)
            stack = Stack(
                database_url=database_url,
                workers=args.workers,
                concurrency=args.concurrency,
                env_overrides=dict(CHAOS_ENV),
                keep_logs=args.keep,
            )
            stack.start()
            if set(kinds) & set(PARTITION_FAULTS_OF[args.adapter]):
                namespace = stack.start_namespaced_worker("worker-partitioned", args.concurrency)
            if emulator:
                stack.set_instagram_faults(**RUN_KNOBS["instagram"], seed=args.seed)
                stack.set_tiktok_faults(**RUN_KNOBS["tiktok"], seed=args.seed)
            api_url = stack.api_url
            platform_urls = {
                "sandbox": stack.sandbox_url,
                "instagram": stack.instagram_url,
                "tiktok": stack.tiktok_url,
            }
            # With a namespaced node, every worker reaches the sandbox through its relay.
            sandbox_url = (
                f"http://{namespace.address('platform')}:{namespace.port('platform')}"
                if namespace is not None
                else stack.sandbox_url
            )
            api_key, project_id, accounts = _local_tenant(
                database_url, stack, args.adapter, sandbox_url
            )
            through = ", every role through PgBouncer" if stack.pooler else ""
            print(f"chaos: stack up (logs in {stack.logdir}{through})", flush=True)
        else:
            api_url, api_key, project_id = args.target, args.api_key, args.project
            platform_urls = {"sandbox": args.sandbox_url}
            accounts = []
        client = Client(api_url, api_key, history)
        if local:
            receivers = {
                "steady": exits.enter_context(serving(Receiver(seed=args.seed))),
                "flaky": exits.enter_context(
                    serving(Receiver(seed=args.seed, fail_first=1, fail_rate=0.2))
                ),
            }
            for receiver in receivers.values():
                receiver.secrets = [_register_endpoint(client, receiver.url)]
        if not accounts:
            r = client.http.get(f"/v1/projects/{project_id}/social-accounts", params={"limit": 100})
            r.raise_for_status()
            accounts = [a["id"] for a in r.json()["items"]]
        injector = Injector(
            kinds,
            args.fault_every,
            args.seed,
            history,
            {p: platform_urls[p] for p in PLATFORMS_OF[args.adapter]},
            stack,
            database_url if local else None,
            adapter=args.adapter,
            outage_s=args.outage,
            cluster=cluster,
            netns=namespace,
            # Longer than a lease, so what the node holds is the reaper's meanwhile.
            partition_s=float(CHAOS_ENV["LEASE_S"]) + 5,
        )
        load = Load(
            client,
            project_id,
            accounts,
            Plan(posts=args.posts, duration_s=args.duration, seed=args.seed),
            clients=args.clients,
        )
        injector.start()
        try:
            load.run()
        finally:
            injector.stop()
        print(f"chaos: load done ({len(load.post_ids):,} posts); settling", flush=True)
        _settle(client, load.post_ids, args.settle_timeout)
        if emulator:
            assert database_url is not None
            keys = emulator_keys(database_url, load.post_ids)
            read_emulator_ledger(history, platform_urls["instagram"], keys)
            read_emulator_ledger(history, platform_urls["tiktok"], keys)
        else:
            read_ledger(history, platform_urls["sandbox"])
        if local and database_url:
            history.webhooks_pending = _await_deliveries(database_url, args.settle_timeout)
            history.webhooks = {name: receipts(r) for name, r in receivers.items()}
            read_state(history, load.post_ids, database_url)
        else:
            _read_state_over_api(history, client, load.post_ids)
        verdicts = checker.check(history, _bounds(args, history))
        rep = report(history, verdicts, stack, time.time() - started, args.adapter)
        _print_report(rep, verdicts)
        Path(args.report).write_text(json.dumps(rep, indent=2))
        history.dump(Path(args.report).with_suffix(".history.json"))
        print(f"chaos: report {args.report}")
        bad = [v for v in verdicts if not v.ok]
        for v in bad:
            for pid in list(v.violations)[:20]:
                print(f"\nviolation of {v.number} ({v.name}): {v.violations[pid]}")
                print(checker.explain(history, pid))
        return 1 if bad else 0
    finally:
        if stack is not None:
            stack.stop()
            # A private cluster goes whole, with exits; --keep keeps only a shared server's.
            if not args.keep and database_url and cluster is None:
                drop_database(database_url)
        if namespace is not None:
            namespace.close()
        exits.close()


def _register_endpoint(client: Client, url: str) -> str:
    """An endpoint of the run's organization for HOOKED; its secret."""
    r = client.http.post("/v1/webhook-endpoints", json={"url": url, "eventTypes": HOOKED})
    r.raise_for_status()
    return str(r.json()["secret"])


def pending_deliveries(db: Engine) -> int:
    """How many webhook deliveries are still pending."""
    with db.connect() as conn:
        return int(
            conn.execute(
                select(func.count())
                .select_from(WebhookDelivery)
                .where(WebhookDelivery.status == DeliveryStatus.PENDING)
            ).scalar_one()
        )


def _await_deliveries(database_url: str, timeout: float) -> int:
    """Wait (bounded) until no webhook delivery is pending; how many still are."""
    db = create_engine(database_url, pool_size=1)
    try:
        wait_until(
            lambda: pending_deliveries(db) == 0, timeout, interval=1.0, what="webhook deliveries"
        )
    except AssertionError:
        print("chaos: webhook deliveries still pending", file=sys.stderr)
    left = pending_deliveries(db)
    db.dispose()
    return left


def receipts(receiver: Receiver) -> list[WebhookReceipt]:
    """What a receiver kept, deduplicated by event id, as the checker reads it."""
    return [
        WebhookReceipt(
            r.event_id,
            str(r.body.get("type")),
            r.body.get("data", {}).get("scheduledPostId"),
            r.body.get("data", {}).get("status"),
            r.verified,
        )
        for r in receiver.delivered().values()
    ]


def _bounds(args: argparse.Namespace, history: History) -> checker.Bounds:
    """Invariant 5's bound: `--bound` after its time for every post, and for a post the
    platform completes on its own that much more as the platform may take (its processing
    and moderation at their slowest in this run) and one poll interval. A post the platform
    was down for waits for it: each outage it met (two can come back to back) as long as it
    kept it waiting, then at most one wait of the outage retry cap, and a margin for the
    retries around it."""
    later = completion_allowance_s() + float(CHAOS_ENV["POLL_CAP_S"])
    return checker.Bounds(
        settle=timedelta(seconds=args.bound),
        completion=timedelta(seconds=later if args.adapter == "emulator" else 0),
        outages=_outages(history),
        recovery=timedelta(seconds=float(CHAOS_ENV["PLATFORM_OUTAGE_RETRY_CAP_S"]) + 30),
    )


def _outages(history: History) -> tuple[tuple[datetime, datetime], ...]:
    """Each platform_down of the run, (start, end)."""
    return tuple(
        sorted(
            (datetime.fromtimestamp(f.began, UTC), datetime.fromtimestamp(f.at, UTC))
            for f in history.faults
            if f.kind == "platform_down" and not f.detail.startswith("injection failed")
        )
    )


def _settle(client: Client, post_ids: list[str], timeout: float) -> None:
    """Wait (bounded) until every post is terminal; the checker reports any that is not."""
    pending = set(post_ids)

    def done() -> bool:
        for pid in list(pending):
            r = client.http.get(f"/v1/scheduled-posts/{pid}")
            if r.status_code == 200 and r.json()["status"] in TERMINAL:
                pending.discard(pid)
            else:
                return False
        return True

    try:
        wait_until(done, timeout, interval=1.0, what="all posts terminal")
    except AssertionError:
        print(f"chaos: {len(pending)} posts still not terminal after {timeout:g}s", file=sys.stderr)


def _local_tenant(
    database_url: str, stack: Stack, adapter: str, sandbox_url: str
) -> tuple[str, str, list[str]]:
    """A tenant whose accounts take the load: 60 sandbox accounts, so waves can be 50 targets
    wide; or EMULATOR_ACCOUNTS Instagram and as many TikTok accounts the stack's emulators
    issued (a wider wave spreads over more content, since each account gets a container at
    most once)."""
    from shared.accounts.accounts import (
        add_issued_account,
        emulator_instagram_account,
        emulator_tiktok_account,
    )
    from shared.kit.db import init_engine, transaction
    from shared.models import Platform
    from shared.tenancy.tenants import create_tenant

    instagram, tiktok = Platform.INSTAGRAM.value, Platform.TIKTOK.value
    # Before the transaction: none stays open while the emulators answer.
    issued = (
        {
            instagram: [
                emulator_instagram_account(stack.instagram_url, timeout=10)
                for _ in range(EMULATOR_ACCOUNTS)
            ],
            tiktok: [
                emulator_tiktok_account(stack.tiktok_url, timeout=10)
                for _ in range(EMULATOR_ACCOUNTS)
            ],
        }
        if adapter == "emulator"
        else {}
    )
    init_engine("publisher.chaos", url=database_url, pool_size=2)
    with transaction() as tx:
        if issued:
            t = create_tenant(
                tx.session,
                "Chaos",
                [tiktok, instagram],
                sandbox_url=sandbox_url,
                issued={p: accounts[0] for p, accounts in issued.items()},
            )
            more = [
                add_issued_account(tx.session, t.organization_id, t.project_id, p, a)
                for p, accounts in issued.items()
                for a in accounts[1:]
            ]
        else:
            t = create_tenant(
                tx.session,
                "Chaos",
                [tiktok, instagram],
                sandbox_url=sandbox_url,
                extra_accounts=58,
            )
            more = t.extra_accounts
    return t.key.token, t.project_id, [a.id for a in t.social_accounts + more]
