"""`publisher`: the one console script for operators and every process role."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from cli import posts as posts_cli
from shared.kit.errors import PublisherError
from shared.tenancy.tiers import EndpointClass, Tier

DEFAULT_NODE = "publisher@%h"
TIER_NAMES = ", ".join(Tier)
LIMIT_FLAGS = (
    ("--rate-read", EndpointClass.READ_LIGHT),
    ("--rate-write", EndpointClass.WRITE_LIGHT),
    ("--rate-long-running", EndpointClass.LONG_RUNNING),
)
# The webhook deliveries' own worker node: a slow receiver holds its slots, never a publish's.
WEBHOOKS_NODE = "webhooks@%h"
# The control ticks' own worker node: a burst of uploads never holds the slots a tick needs.
CONTROL_NODE = "control@%h"


def _cmd_migrate(_: argparse.Namespace) -> int:
    from shared.kit.migrate import migrate
    from shared.kit.settings import get_settings

    created = migrate()
    url = get_settings().database_url
    print(("created and migrated " if created else "migrated ") + url.rsplit("/", 1)[-1])
    return 0


@contextlib.contextmanager
def _metrics_dir(role: str) -> Iterator[Path]:
    """The multiprocess metrics directory of this process and its children, while they run.

    One this process made is removed when it exits cleanly; one given in
    PROMETHEUS_MULTIPROC_DIR belongs to whoever gave it.
    """
    from shared.kit import metrics_dir

    given = os.environ.get(metrics_dir.MULTIPROC_ENV)
    path = metrics_dir.prepare(role)
    owner = os.getpid()
    try:
        yield path
    finally:
        # Forked children leave with os._exit and never get here; the pid check makes sure.
        if not given and os.getpid() == owner:
            shutil.rmtree(path, ignore_errors=True)


def _cmd_api(args: argparse.Namespace) -> int:
    import uvicorn

    from shared.kit import logs

    with contextlib.ExitStack() as stack:
        if args.workers > 1:
            # Several processes: each writes its samples where /metrics can sum them. Set
            # before anything imports prometheus_client, which reads it once.
            stack.enter_context(_metrics_dir("api"))
        if args.metrics_port:
            # Off the public port: posts by status across every tenant are for operators.
            _serve_metrics(args.metrics_host, args.metrics_port, with_post_state=True)
        logs.configure("api")
        uvicorn.run(
            "api.app:create_app",
            factory=True,
            host=args.host,
            port=args.port,
            workers=args.workers,
            log_level="info",
            log_config=None,
            access_log=False,
        )
    return 0


def _serve_metrics(host: str, port: int, *, with_post_state: bool = False) -> None:
    """Prometheus /metrics on a port of its own, served by a thread of this process."""
    from prometheus_client import start_http_server

    from shared.kit.metrics import registry

    start_http_server(port, addr=host, registry=registry(with_post_state=with_post_state))


def _cmd_worker(args: argparse.Namespace) -> int:
    os.environ["PUBLISHER_ROLE"] = "worker"
    with contextlib.ExitStack() as stack:
        if args.metrics_port:
            # Prefork children are separate processes: multiprocess mode, set up before
            # prometheus_client is imported, served from this (the main) process.
            stack.enter_context(_metrics_dir("worker"))
            _serve_metrics(args.metrics_host, args.metrics_port)

        from worker.celery_app import app

        app.worker_main(
            [
                "worker",
                "--loglevel=INFO",
                f"--concurrency={args.concurrency}",
                f"--queues={args.queues}",
                f"--hostname={args.name}",
            ]
        )
    return 0


def _cmd_beat(_: argparse.Namespace) -> int:
    os.environ["PUBLISHER_ROLE"] = "beat"
    from shared.kit.settings import get_settings
    from worker.celery_app import app

    state = Path(get_settings().state_dir)
    state.mkdir(parents=True, exist_ok=True)
    # Beat only sends the ticks; their task-sent events would flood Flower (see worker.tasks).
    app.conf.task_send_sent_event = False
    app.start(["beat", "--loglevel=INFO", f"--schedule={state / 'celerybeat-schedule'}"])
    return 0


def _cmd_flower(args: argparse.Namespace) -> int:
    from shared.kit.settings import get_settings
    from worker.celery_app import app

    settings = get_settings()
    app.start(
        [
            "flower",
            f"--address={args.host}",
            f"--port={args.port}",
            f"--basic-auth={settings.flower_user}:{settings.flower_password}",
            "--max-tasks=10000",
            "--persistent=False",
        ]
    )
    return 0


def _cmd_sandbox(args: argparse.Namespace) -> int:
    from sandbox.faults import KNOBS, Faults
    from sandbox.server import serve

    serve(args.host, args.port, Faults(**{knob.name: getattr(args, knob.name) for knob in KNOBS}))
    return 0


def _cmd_emulator_instagram(args: argparse.Namespace) -> int:
    from sandbox.instagram import serve
    from sandbox.instagram_faults import KNOBS, InstagramFaults

    knobs = InstagramFaults(**{knob.name: getattr(args, knob.name) for knob in KNOBS})
    serve(args.host, args.port, knobs)
    return 0


def _cmd_emulator_tiktok(args: argparse.Namespace) -> int:
    from sandbox.tiktok import serve
    from sandbox.tiktok_faults import KNOBS, TikTokFaults

    knobs = TikTokFaults(**{knob.name: getattr(args, knob.name) for knob in KNOBS})
    serve(args.host, args.port, knobs)
    return 0


def _emit(payload: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(payload))
    else:
        for key, value in payload.items():
            print(f"{key}: {value}")


def _fail(message: str) -> int:
    """A one-line error on stderr, and exit 1: the command could not do what it was asked."""
    print(f"publisher: {message}", file=sys.stderr)
    return 1


def _keys_told() -> int:
    """After a committed change to a key or an organization: make sure every API process
    forgets the keys it remembers (the domain asked once after commit; this one reports).
    Exit 1 if Redis cannot be told: the change stands, API processes see it within their
    cache's TTL rather than at once."""
    from api.keycache import TTL_S
    from shared.kit.settings import get_settings
    from shared.tenancy.keys import invalidate_cached_keys

    try:
        invalidate_cached_keys(get_settings().redis_url)
    except Exception as exc:
        return _fail(
            f"saved, but the API processes could not be told ({type(exc).__name__}):"
            f" they apply it within {TTL_S:g} s"
        )
    return 0


def _cmd_tenants_create(args: argparse.Namespace) -> int:
    from shared.kit.db import transaction
    from shared.kit.errors import Unavailable
    from shared.kit.settings import get_settings
    from shared.tenancy.tenants import create_tenant, issue_emulator_accounts
    from shared.tenancy.tiers import tier_named

    settings = get_settings()
    platforms = [p.strip() for p in args.platforms.split(",") if p.strip()]
    if args.tier is not None:
        tier_named(args.tier)  # before any account is issued on an emulator
    issued = {}
    if args.adapter == "emulator":
        try:
            # Before the transaction: none stays open while the emulator answers.
            issued = issue_emulator_accounts(
                args.name,
                platforms,
                instagram_api_url=settings.instagram_api_url,
                tiktok_api_url=settings.tiktok_api_url,
                timeout=settings.platform_timeout_s,
            )
        except Unavailable as exc:
            return _fail(
                f"no platform emulator: {exc.message}; start them with `publisher run` (or "
                "`publisher emulator instagram` / `publisher emulator tiktok`), or pass "
                "--adapter sandbox"
            )
    with transaction() as tx:
        tenant = create_tenant(
            tx.session,
            args.name,
            platforms,
            sandbox_url=settings.sandbox_url,
            env=args.env,
            issued=issued,
            tier=args.tier,
        )
    _emit(
        {
            "organizationId": tenant.organization_id,
            "projectId": tenant.project_id,
            "tier": tenant.key.tier,
            "apiKey": tenant.key.token,
            "socialAccounts": [
                {"id": a.id, "platform": a.platform} for a in tenant.social_accounts
            ],
        },
        args.json,
    )
    return 0


def _own_limit(flag: str, value: str) -> int | None:
    """A limit flag's value: a number, or None for `tier` (back to the tier's limit)."""
    if value == "tier":
        return None
    if not value.isdigit():
        raise ValueError(f"{flag} takes a positive number, or `tier` for the tier's limit")
    return int(value)


def _cmd_tenants_set_limits(args: argparse.Namespace) -> int:
    from shared.kit.db import transaction
    from shared.models import Organization
    from shared.tenancy.tenants import set_daily_write_cap, set_organization_tier
    from shared.tenancy.tiers import TIERS

    if args.tier is None and args.daily_write_cap is None:
        return _fail("nothing to change: give --tier and/or --daily-write-cap")
    if args.keys and args.tier is None:
        return _fail("--keys moves the keys to the new --tier: give one")
    with transaction() as tx:
        moved = 0
        if args.tier is not None:
            moved = set_organization_tier(tx.session, args.org, args.tier, keys=args.keys)
        if args.daily_write_cap is not None:
            cap = _own_limit("--daily-write-cap", args.daily_write_cap)
            set_daily_write_cap(tx.session, args.org, cap)
        org = tx.session.get(Organization, args.org)
        assert org is not None
        own = org.daily_write_cap
        _emit(
            {
                "organizationId": org.id,
                "tier": org.tier,
                "dailyWriteCap": own if own is not None else TIERS[Tier(org.tier)].daily_writes,
                "ownDailyWriteCap": own,
                "keysMoved": moved,
            },
            args.json,
        )
    return _keys_told()


def _cmd_accounts_connect(args: argparse.Namespace) -> int:
    from shared.accounts.accounts import connect_account
    from shared.kit.clock import iso

    # "-" reads the token from stdin, keeping it out of shell history and the process list.
    token = sys.stdin.readline().strip() if args.access_token == "-" else args.access_token  # noqa: S105 - "-" is a flag value, not a secret
    if not token:
        return _fail("no access token given (--access-token TOKEN, or - to read it from stdin)")
    try:
        account = connect_account(
            args.project,
            args.platform,
            user_id=args.user_id,
            access_token=token,
            refresh_token=args.refresh_token,
            expires_in=args.expires_in,
            api_url=args.api_url,
        )
    except PublisherError as exc:
        return _fail(exc.message)
    _emit(
        {
            "id": account.id,
            "platform": account.platform,
            "handle": account.handle,
            "status": account.status,
            "tokenExpiresAt": iso(account.token_expires_at),
        },
        args.json,
    )
    return 0


def _cmd_accounts_disconnect(args: argparse.Namespace) -> int:
    from cli.posts import login_name
    from shared.accounts.accounts import disconnect_account

    if not args.reason.strip():
        return _fail("--reason must say why (it is kept on every canceled post)")
    try:
        done = disconnect_account(args.account, args.reason, operator=args.operator or login_name())
    except PublisherError as exc:
        return _fail(exc.message)
    _emit(
        {
            "id": done.account.id,
            "status": done.account.status,
            "canceled": done.canceled,
            "completing": done.completing,
        },
        args.json,
    )
    return 0


def _cmd_accounts_reencrypt(args: argparse.Namespace) -> int:
    from shared.accounts.credentials import CredentialsUnreadable, reencrypt_all
    from shared.kit.db import transaction

    try:
        with transaction() as tx:
            changed = reencrypt_all(tx.session)
    except CredentialsUnreadable as exc:
        return _fail(exc.message)
    _emit({"reencrypted": changed}, args.json)
    return 0


def _cmd_keys_create(args: argparse.Namespace) -> int:
    from shared.kit.db import transaction
    from shared.tenancy.keys import create_key

    scopes = [s.strip() for s in args.scopes.split(",") if s.strip()]
    with transaction() as tx:
        key = create_key(
            tx.session,
            args.org,
            scopes,
            env=args.env,
            name=args.name,
            tier=args.tier,
            rate_limit_read=args.rate_read,
            rate_limit_write=args.rate_write,
            rate_limit_long_running=args.rate_long_running,
        )
    _emit(
        {
            "id": key.id,
            "organizationId": key.organization_id,
            "apiKey": key.token,
            "scopes": key.scopes,
            "env": key.env,
            "tier": key.tier,
        },
        args.json,
    )
    return 0


def _cmd_keys_set_limits(args: argparse.Namespace) -> int:
    from shared.kit.db import transaction
    from shared.kit.settings import get_settings
    from shared.models import ApiKey, Organization
    from shared.tenancy.keys import set_key_limit, set_key_tier
    from shared.tenancy.tiers import key_override, limits_of

    given = [
        (klass, flag, value)
        for flag, klass in LIMIT_FLAGS
        if (value := getattr(args, flag.removeprefix("--").replace("-", "_"))) is not None
    ]
    if args.tier is None and not given:
        flags = ", ".join(flag for flag, _ in LIMIT_FLAGS)
        return _fail(f"nothing to change: give --tier and/or {flags}")
    with transaction() as tx:
        if args.tier is not None:
            set_key_tier(tx.session, args.key_id, args.tier)
        for klass, flag, value in given:
            set_key_limit(tx.session, args.key_id, klass, _own_limit(flag, value))
        key = tx.session.get(ApiKey, args.key_id)
        assert key is not None
        org = tx.session.get(Organization, key.organization_id)
        assert org is not None
        limits = limits_of(key, org, scale=get_settings().rate_limit_multiplier)
        _emit(
            {
                "id": key.id,
                "tier": key.tier,
                "perMinute": {klass.value: limits.per_minute(klass) for klass in EndpointClass},
                "own": [k.value for k in EndpointClass if key_override(key, k) is not None],
            },
            args.json,
        )
    return _keys_told()


def _cmd_keys_revoke(args: argparse.Namespace) -> int:
    from shared.kit.clock import utcnow
    from shared.kit.db import transaction
    from shared.kit.errors import NotFound
    from shared.tenancy.keys import revoke_key

    with transaction() as tx:
        if not revoke_key(tx.session, args.key_id, now=utcnow()):
            raise NotFound(f"no active key {args.key_id}")
    print(f"revoked {args.key_id}")
    return _keys_told()


def _cmd_bench(args: argparse.Namespace) -> int:
    from bench.main import run

    return run(args)


def _cmd_chaos(args: argparse.Namespace) -> int:
    from chaos.run import run

    return run(args)


def _worker_answers(app: Any, node: str, timeout: float) -> bool:
    """True if the worker node `node` (hostname expanded) replies to one broker ping."""
    replies = app.control.ping(destination=[node], timeout=timeout)
    return any(node in reply for reply in replies or [])


def _cmd_healthcheck_worker(args: argparse.Namespace) -> int:
    """Exit 0 if the named worker answers a broker ping within the timeout."""
    from celery.utils.nodenames import host_format

    from worker.celery_app import app

    name = host_format(args.name)
    deadline = time.monotonic() + args.timeout
    # A broadcast ping can be missed (a reply lost to a reconnect, a busy main process):
    # ask again in short rounds until the deadline rather than once for all of it.
    while (left := deadline - time.monotonic()) > 0:
        if _worker_answers(app, name, min(2.0, left)):
            print(f"{name}: ok")
            return 0
    print(f"publisher: worker {name} did not answer within {args.timeout:g}s", file=sys.stderr)
    return 1


def _cmd_healthcheck_api(args: argparse.Namespace) -> int:
    """Exit 0 if the API at --url is ready (database and Redis reachable)."""
    import httpx

    try:
        response = httpx.get(f"{args.url.rstrip('/')}/readyz", timeout=args.timeout)
    except httpx.HTTPError as exc:
        print(f"publisher: {args.url} unreachable: {type(exc).__name__}", file=sys.stderr)
        return 1
    print(response.text)
    return 0 if response.status_code == 200 else 1


def _cmd_run(args: argparse.Namespace) -> int:
    """Migrate, then start every role as a child process and print where each listens."""
    from kombu.utils.url import maybe_sanitize_url

    from shared.kit.settings import get_settings

    settings = get_settings()
    if _cmd_migrate(args) != 0:
        return 1
    me = [sys.executable, "-m", "cli"]
    commands = {
        "sandbox": [*me, "sandbox", "--port", str(_port(settings.sandbox_url))],
        "instagram": [
            *me,
            "emulator",
            "instagram",
            "--port",
            str(_port(settings.instagram_api_url)),
        ],
        "tiktok": [*me, "emulator", "tiktok", "--port", str(_port(settings.tiktok_api_url))],
        "api": [
            *me,
            "api",
            "--host",
            args.host,
            "--port",
            str(args.port),
            "--metrics-host",
            args.host,
            "--metrics-port",
            str(args.api_metrics_port),
        ],
        "worker": [
            *me,
            "worker",
            "--name",
            DEFAULT_NODE,
            "--concurrency",
            str(args.concurrency),
            "--metrics-host",
            args.host,
            "--metrics-port",
            str(args.worker_metrics_port),
        ],
        "webhooks": [
            *me,
            "worker",
            "--name",
            WEBHOOKS_NODE,
            "--queues",
            "webhooks",
            "--concurrency",
            str(args.concurrency),
        ],
        "control": [
            *me,
            "worker",
            "--name",
            CONTROL_NODE,
            "--queues",
            "control",
            "--concurrency",
            "2",
        ],
        "beat": [*me, "beat"],
        "flower": [*me, "flower", "--host", args.host, "--port", str(args.flower_port)],
    }
    # Beat answers by writing its schedule file anew; a beat that does not hold the ticks'
    # lease writes it once, at start, so "anew" counts from before any child started.
    started = time.time() - 1
    children = {role: subprocess.Popen(cmd) for role, cmd in commands.items()}
    if not _wait_until_answering(children, args, started):
        _stop_children(children)
        return 1
    instagram = settings.instagram_api_url.rstrip("/")
    tiktok = settings.tiktok_api_url.rstrip("/")
    broker = maybe_sanitize_url(settings.broker_url)
    print(
        "\npublisher is up:\n"
        f"  api       http://{args.host}:{args.port}  (OpenAPI: /openapi.json, docs: /docs; "
        f"metrics http://{args.host}:{args.api_metrics_port}/metrics)\n"
        f"  flower    http://{args.host}:{args.flower_port}  (user {settings.flower_user})\n"
        f"  sandbox   {settings.sandbox_url}  (ledger: {settings.sandbox_url}/ledger)\n"
        f"  instagram {instagram}  (the Instagram emulator; ledger: {instagram}/ledger)\n"
        f"  tiktok    {tiktok}  (the TikTok emulator; ledger: {tiktok}/ledger)\n"
        f"  worker    concurrency {args.concurrency}, broker {broker}, "
        f"metrics http://{args.host}:{args.worker_metrics_port}/metrics\n"
        f"  webhooks  a worker of its own for webhook deliveries, concurrency {args.concurrency}\n"
        "  control   a worker of its own for the dispatcher, reaper and approval ticks\n"
        f"  beat      dispatcher tick every {settings.dispatch_interval_s:g}s (any number of"
        " beats may run: one at a time sends the ticks)\n"
        "Ctrl-C stops everything.\n",
        flush=True,
    )
    stopping = False

    def stop(*_: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    code = 0
    while not stopping:
        for role, proc in children.items():
            # A child that a terminal's Ctrl-C reached first is stopping, not failing.
            if proc.poll() is not None and not stopping:
                print(f"{role} exited with {proc.returncode}; stopping the rest", file=sys.stderr)
                stopping, code = True, 1
        time.sleep(0.5)
    _stop_children(children)
    return code


def _port(url: str) -> int:
    """The port a server at `url` listens on."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return parts.port or (443 if parts.scheme == "https" else 80)


def _stop_children(children: dict[str, subprocess.Popen[bytes]]) -> None:
    for proc in children.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 30
    for proc in children.values():
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()


def _wait_until_answering(
    children: dict[str, subprocess.Popen[bytes]], args: argparse.Namespace, started: float
) -> bool:
    """True once every role answers its own health check; False if one exits or the wait
    outlasts --ready-timeout. `make run` says "up" only when a request would be served."""
    import httpx
    from celery.utils.nodenames import host_format

    from shared.kit.settings import get_settings
    from worker.celery_app import app

    base = f"http://{args.host}"
    node = host_format(DEFAULT_NODE)

    def answers(url: str) -> bool:
        try:
            return httpx.get(url, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    settings = get_settings()
    state = Path(settings.state_dir)
    checks: dict[str, Callable[[], bool]] = {
        "sandbox": lambda: answers(f"{settings.sandbox_url}/healthz"),
        "instagram": lambda: answers(f"{settings.instagram_api_url.rstrip('/')}/healthz"),
        "tiktok": lambda: answers(f"{settings.tiktok_api_url.rstrip('/')}/healthz"),
        "api": lambda: answers(f"{base}:{args.port}/readyz"),
        "worker": lambda: _worker_answers(app, node, 1.0),
        "webhooks": lambda: _worker_answers(app, host_format(WEBHOOKS_NODE), 1.0),
        "control": lambda: _worker_answers(app, host_format(CONTROL_NODE), 1.0),
        "flower": lambda: answers(f"{base}:{args.flower_port}/healthcheck"),
        # Beat serves nothing; it answers by writing its schedule file, anew for this run.
        "beat": lambda: any(
            p.stat().st_mtime >= started for p in state.glob("celerybeat-schedule*")
        ),
    }
    waiting = dict(checks)
    deadline = time.monotonic() + args.ready_timeout
    while waiting:
        for role, proc in children.items():
            if proc.poll() is not None:
                print(f"publisher: {role} exited with {proc.returncode}", file=sys.stderr)
                return False
        waiting = {role: check for role, check in waiting.items() if not check()}
        if time.monotonic() > deadline:
            print(
                f"publisher: no answer within {args.ready_timeout:g}s from "
                + ", ".join(sorted(waiting)),
                file=sys.stderr,
            )
            return False
        if waiting:
            time.sleep(0.25)
    return True


def _add_metrics_flags(parser: argparse.ArgumentParser, host: str, where: str) -> None:
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=0,
        help=f"serve Prometheus /metrics here, {where} (0: off)",
    )
    parser.add_argument("--metrics-host", default=host)


def build_parser() -> argparse.ArgumentParser:
    """Every subcommand and its flags."""
    parser = argparse.ArgumentParser(prog="publisher", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("migrate", help="create the database if missing and apply migrations")

    api = sub.add_parser("api", help="serve the HTTP API")
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=int, default=8000)
    api.add_argument("--workers", type=int, default=1)
    _add_metrics_flags(api, "127.0.0.1", "apart from the API port")

    worker = sub.add_parser("worker", help="run a Celery worker")
    worker.add_argument("--concurrency", type=int, default=4)
    worker.add_argument(
        "--name", default=DEFAULT_NODE, help="Celery node name, unique per host (%%h: the host)"
    )
    worker.add_argument(
        "--queues",
        default="publishing",
        help="the queues it takes: publishing (publishes, reconciles and polls), control "
        "(the dispatcher and reaper ticks) or webhooks (deliveries), each best on workers of "
        "its own so no burst of one holds the slots of another; comma-separated to combine",
    )
    _add_metrics_flags(worker, "0.0.0.0", "summed across the pool")

    sub.add_parser(
        "beat",
        help="run the scheduler of the ticks (any number may run: the one holding the ticks' "
        "lease sends them, another takes over within BEAT_LEASE_S)",
    )

    flower = sub.add_parser("flower", help="run Flower, with basic auth from the environment")
    flower.add_argument("--host", default="127.0.0.1")
    flower.add_argument("--port", type=int, default=5555)

    from sandbox import instagram_faults, tiktok_faults
    from sandbox.faults import KNOBS, add_knob_flags

    sandbox = sub.add_parser("sandbox", help="run the sandbox platform server")
    sandbox.add_argument("--host", default="127.0.0.1")
    sandbox.add_argument("--port", type=int, default=8900)
    # One flag per fault knob, as sandbox/faults.py defines them (also PUT /faults at runtime).
    add_knob_flags(sandbox, KNOBS)

    emulator = sub.add_parser("emulator", help="platform emulators").add_subparsers(
        dest="action", required=True
    )
    instagram = emulator.add_parser(
        "instagram", help="run the Instagram Graph API emulator (content publishing)"
    )
    instagram.add_argument("--host", default="127.0.0.1")
    instagram.add_argument("--port", type=int, default=8901)
    # One flag per knob of sandbox/instagram_faults.py (also PUT /faults at runtime).
    add_knob_flags(instagram, instagram_faults.KNOBS)
    tiktok = emulator.add_parser(
        "tiktok", help="run the TikTok Content Posting API emulator (and its video list)"
    )
    tiktok.add_argument("--host", default="127.0.0.1")
    tiktok.add_argument("--port", type=int, default=8902)
    # One flag per knob of sandbox/tiktok_faults.py (also PUT /faults at runtime).
    add_knob_flags(tiktok, tiktok_faults.KNOBS)

    run = sub.add_parser(
        "run",
        help="migrate, then start the sandbox, the Instagram and TikTok emulators, api, "
        "worker, beat and flower",
    )
    run.add_argument("--host", default="127.0.0.1")
    run.add_argument("--port", type=int, default=8000)
    run.add_argument("--flower-port", type=int, default=5555)
    run.add_argument("--concurrency", type=int, default=4)
    run.add_argument("--worker-metrics-port", type=int, default=9808)
    run.add_argument("--api-metrics-port", type=int, default=9807)
    run.add_argument(
        "--ready-timeout",
        type=float,
        default=120.0,
        help="seconds to wait for every role to answer before giving up",
    )

    tenants = sub.add_parser("tenants", help="organizations").add_subparsers(
        dest="action", required=True
    )
    create = tenants.add_parser("create", help="organization, project, accounts and a full key")
    create.add_argument("--name", required=True)
    create.add_argument("--platforms", default="tiktok,instagram")
    create.add_argument("--env", choices=["live", "test"], default="live")
    create.add_argument(
        "--adapter",
        choices=["emulator", "sandbox"],
        default="emulator",
        help="emulator: each account is made on its platform's emulator and posts there "
        "(INSTAGRAM_API_URL, TIKTOK_API_URL; `publisher run` starts both); sandbox: every "
        "account posts to the sandbox at SANDBOX_URL",
    )
    create.add_argument(
        "--tier",
        default=None,
        help=f"{TIER_NAMES}: the organization's and its first key's rate-limit tier "
        "(default: RATE_LIMIT_DEFAULT_TIER)",
    )
    create.add_argument("--json", action="store_true")
    ts = tenants.add_parser("set-limits", help="an organization's tier, or its own daily write cap")
    ts.add_argument("--org", required=True)
    ts.add_argument(
        "--tier", default=None, help=f"{TIER_NAMES}: its daily cap, unless it has its own"
    )
    ts.add_argument(
        "--daily-write-cap",
        default=None,
        metavar="N|tier",
        help="writes a UTC day for the whole organization; `tier`: its tier's again",
    )
    ts.add_argument(
        "--keys", action="store_true", help="move every active key of it to --tier as well"
    )
    ts.add_argument("--json", action="store_true")

    accounts = sub.add_parser("accounts", help="social accounts").add_subparsers(
        dest="action", required=True
    )
    connect = accounts.add_parser(
        "connect", help="add an Instagram account to a project once Instagram vouches for its token"
    )
    connect.add_argument("--project", required=True)
    connect.add_argument(
        "--platform",
        required=True,
        choices=["instagram", "tiktok"],
        help="instagram or tiktok",
    )
    connect.add_argument(
        "--user-id",
        required=True,
        help="the Instagram professional account's user id, or the TikTok creator's open_id",
    )
    connect.add_argument(
        "--access-token",
        required=True,
        help="its token (Instagram Login's long-lived one, or TikTok's access token); - reads "
        "it from stdin",
    )
    connect.add_argument(
        "--refresh-token", default=None, help="TikTok: the refresh token (required there)"
    )
    connect.add_argument(
        "--expires-in", type=float, default=None, help="the token's lifetime in seconds"
    )
    connect.add_argument(
        "--api-url",
        default=None,
        help="the API it is verified with and posts to (default: INSTAGRAM_API_URL or "
        "TIKTOK_API_URL)",
    )
    connect.add_argument("--json", action="store_true")
    disconnect = accounts.add_parser(
        "disconnect",
        help="disconnect an account: every post of it not yet at its platform is canceled",
    )
    disconnect.add_argument("--account", required=True, help="the social account's id (sa_…)")
    disconnect.add_argument(
        "--reason", required=True, help="kept on the account and on each canceled post"
    )
    disconnect.add_argument(
        "--operator", default=None, help="who disconnects it (default: the login name)"
    )
    disconnect.add_argument("--json", action="store_true")
    reencrypt = accounts.add_parser(
        "reencrypt", help="seal every account's credentials anew with the first CREDENTIAL_KEYS key"
    )
    reencrypt.add_argument("--json", action="store_true")

    # show, list and settle: the operator's view of a post (cli/posts.py).
    posts_cli.add_parser(sub)

    keys = sub.add_parser("keys", help="API keys").add_subparsers(dest="action", required=True)
    kc = keys.add_parser("create", help="a key with the given scopes")
    kc.add_argument("--org", required=True)
    kc.add_argument(
        "--scopes", required=True, help="comma-separated, e.g. publish:read,publish:write"
    )
    kc.add_argument("--env", choices=["live", "test"], default="live")
    kc.add_argument("--name", default="")
    kc.add_argument("--tier", default=None, help=f"{TIER_NAMES} (default: the organization's tier)")
    for flag, klass in LIMIT_FLAGS:
        kc.add_argument(
            flag, type=int, default=None, help=f"{klass} requests per minute, over the tier's"
        )
    kc.add_argument("--json", action="store_true")
    ks = keys.add_parser("set-limits", help="a key's tier, or its own limits per minute")
    ks.add_argument("key_id")
    ks.add_argument("--tier", default=None, help=f"{TIER_NAMES}; the key's own limits still win")
    for flag, klass in LIMIT_FLAGS:
        ks.add_argument(
            flag,
            default=None,
            metavar="N|tier",
            help=f"{klass} requests per minute; `tier`: the tier's again",
        )
    ks.add_argument("--json", action="store_true")
    kr = keys.add_parser("revoke", help="revoke a key at once")
    kr.add_argument("key_id")

    from bench.main import add_arguments as bench_arguments
    from chaos.options import add_arguments as chaos_arguments

    bench_arguments(
        sub.add_parser(
            "bench",
            help="throughput, dispatch lag, cancel latency and memory at scale; "
            "writes docs/benchmarks.md",
        )
    )

    chaos_arguments(
        sub.add_parser(
            "chaos",
            help="load, faults and the invariant checker, on an isolated stack or --target",
        )
    )

    health = sub.add_parser("healthcheck", help="probes for orchestrators").add_subparsers(
        dest="action", required=True
    )
    hw = health.add_parser("worker", help="the worker node answers a broker ping")
    hw.add_argument("--name", default=DEFAULT_NODE)
    hw.add_argument("--timeout", type=float, default=10.0)
    ha = health.add_parser("api", help="the API is ready (database and Redis reachable)")
    ha.add_argument("--url", default="http://127.0.0.1:8000")
    ha.add_argument("--timeout", type=float, default=5.0)
    return parser


HANDLERS = {
    ("migrate", None): _cmd_migrate,
    ("api", None): _cmd_api,
    ("worker", None): _cmd_worker,
    ("beat", None): _cmd_beat,
    ("flower", None): _cmd_flower,
    ("sandbox", None): _cmd_sandbox,
    ("emulator", "instagram"): _cmd_emulator_instagram,
    ("emulator", "tiktok"): _cmd_emulator_tiktok,
    ("run", None): _cmd_run,
    ("tenants", "create"): _cmd_tenants_create,
    ("tenants", "set-limits"): _cmd_tenants_set_limits,
    ("accounts", "connect"): _cmd_accounts_connect,
    ("accounts", "reencrypt"): _cmd_accounts_reencrypt,
    ("accounts", "disconnect"): _cmd_accounts_disconnect,
    **posts_cli.HANDLERS,
    ("keys", "create"): _cmd_keys_create,
    ("keys", "set-limits"): _cmd_keys_set_limits,
    ("keys", "revoke"): _cmd_keys_revoke,
    ("bench", None): _cmd_bench,
    ("chaos", None): _cmd_chaos,
    ("healthcheck", "worker"): _cmd_healthcheck_worker,
    ("healthcheck", "api"): _cmd_healthcheck_api,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `publisher` script."""
    args = build_parser().parse_args(argv)
    handler = HANDLERS[(args.command, getattr(args, "action", None))]
    try:
        return handler(args)
    except PublisherError as exc:
        print(f"publisher: {exc.message}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"publisher: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
