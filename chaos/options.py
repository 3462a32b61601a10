"""The `publisher chaos` options; light to import, since every CLI call builds the parser."""

from __future__ import annotations

import argparse
from typing import Final

# Where the run's accounts post: the sandbox (a ledger keyed by idempotency key), or the
# stack's Instagram and TikTok emulators (no idempotency key: each ledger is matched by
# account and caption).
ADAPTERS: Final = ("sandbox", "emulator")
# The platforms each adapter's accounts post to, each with a fault API of its own.
PLATFORMS_OF: Final[dict[str, tuple[str, ...]]] = {
    "sandbox": ("sandbox",),
    "emulator": ("instagram", "tiktok"),
}
PROCESS_FAULTS: Final = ("worker_kill", "redis_restart", "pg_terminate")
# Faults a run injects only when asked (`--faults`, or `all`): `pg_restart` runs the stack on a
# private PostgreSQL cluster (harness/pgcluster.py) and restarts it, fast or as a crash, for a
# few seconds each time.
OPT_IN_FAULTS: Final = ("pg_restart",)
# The platform faults each adapter takes; chaos/faults.py maps each to its platforms' knobs.
PLATFORM_FAULTS_OF: Final[dict[str, tuple[str, ...]]] = {
    "sandbox": ("latency", "http_429", "http_503", "lost_response", "platform_down"),
    "emulator": (
        "latency",
        "http_429",
        "http_503",
        "lost_response",
        "container_error",
        "slow_completion",
        "platform_down",
    ),
}


# One worker node in a network namespace (harness/netns.py), cut off from one service for
# longer than a lease, then healed. Opt-in (--faults): they need root and `ip netns`, and
# the sandbox adapter (the emulators' accounts post to loopback addresses the namespace
# cannot reach).
PARTITION_FAULTS_OF: Final[dict[str, tuple[str, ...]]] = {
    "sandbox": ("partition_postgres", "partition_redis", "partition_platform"),
    "emulator": (),
}


def faults_of(adapter: str) -> tuple[str, ...]:
    """The fault kinds a run on this adapter injects by default (--faults unset)."""
    return PROCESS_FAULTS + PLATFORM_FAULTS_OF[adapter]


def all_faults_of(adapter: str) -> tuple[str, ...]:
    """Every fault kind --faults may name for this adapter (and `all` injects): the default
    ones, PostgreSQL restarts and the partitions."""
    return faults_of(adapter) + OPT_IN_FAULTS + PARTITION_FAULTS_OF[adapter]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `publisher chaos` options."""
    parser.add_argument("--posts", type=int, default=400)
    parser.add_argument("--duration", type=float, default=40.0, help="seconds of waves")
    parser.add_argument("--workers", type=int, default=3, help="worker nodes (processes)")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--clients", type=int, default=16, help="concurrent API clients")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--adapter",
        choices=ADAPTERS,
        default="sandbox",
        help="sandbox: every account posts to the sandbox platform; emulator: to Instagram "
        "and TikTok accounts issued by the stack's emulators (local stack only: matching "
        "their ledgers to posts needs each account's platform user id, which only the "
        "database holds, so --target refuses it)",
    )
    parser.add_argument(
        "--faults",
        default=None,
        help=f"comma-separated among {', '.join(faults_of('emulator'))} (container_error, "
        "slow_completion: emulator only), and the opt-in pg_restart (a private PostgreSQL "
        "cluster, stopped fast or crashed) and "
        f"{', '.join(PARTITION_FAULTS_OF['sandbox'])} (sandbox only, local stack, root and "
        "`ip netns`: one worker node runs in a network namespace and is cut off from "
        "PostgreSQL, Redis or the platform for longer than a lease); 'none' for none; 'all' "
        "for every kind; default: every kind the adapter takes but the opt-in ones",
    )
    parser.add_argument("--fault-every", type=float, default=6.0, help="seconds between faults")
    parser.add_argument(
        "--outage",
        type=float,
        default=30.0,
        help="seconds each platform_down fault keeps the platform down (longer than the "
        "platform retry budget: the posts due meanwhile wait for it, then go out)",
    )
    parser.add_argument("--settle-timeout", type=float, default=180.0)
    parser.add_argument(
        "--bound",
        type=float,
        default=120.0,
        help="seconds after its time by which a post must be terminal",
    )
    parser.add_argument(
        "--database-url",
        default=None,
        help="local: the run's own database (created, dropped unless --keep)",
    )
    parser.add_argument("--report", default="chaos-report.json", help="JSON report path")
    parser.add_argument("--keep", action="store_true", help="keep the database and logs")
    parser.add_argument("--target", default=None, help="API base URL of a running deployment")
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--project", default=None)
    parser.add_argument("--sandbox-url", default=None)
