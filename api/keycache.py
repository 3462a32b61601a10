"""Authenticated keys, remembered per API process so a request need not read its key from
PostgreSQL; and the promise that keeps that honest: a key revoked (or its limits changed)
is refused, or limited anew, by every API process from the moment the change returns.

Every change to a key or an organization writes a new value to one Redis key, the keys'
generation (`shared.tenancy.keys.invalidate_cached_keys`, after its commit). A request reads
the generation first (one Redis round trip, no transaction) and uses a remembered key only
if it was authenticated under that same generation; else it authenticates in the database
and remembers the answer under the generation it read before that read, so a change that
lands in between makes the entry stale at once. Redis down, or wiped: no generation to
compare, so every request goes to the database (a wiped generation is set anew, unlike any
remembered one). Entries also expire after `TTL_S`, which keeps `last_used_at` current.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final, Generic, TypeVar

import redis

from shared.tenancy.keys import KEYS_GENERATION

TTL_S: Final = 30.0
MAX_ENTRIES: Final = 10_000

P = TypeVar("P")


@dataclass(frozen=True)
class _Entry(Generic[P]):
    principal: P
    generation: bytes
    expires: float


class KeyCache(Generic[P]):
    """Principals by the digest of their bearer token (never the token itself), each with
    the generation it was authenticated under; least recently used dropped past
    MAX_ENTRIES. Shared by the app's request threads."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._entries: OrderedDict[bytes, _Entry[P]] = OrderedDict()
        self._lock = threading.Lock()

    def generation(self) -> bytes | None:
        """The keys' current generation (set, if a wipe left none); None if Redis cannot be
        asked."""
        candidate = secrets.token_hex(8).encode()
        try:
            previous = self._client.set(KEYS_GENERATION, candidate, nx=True, get=True)
        except redis.RedisError:
            return None
        return previous if isinstance(previous, bytes) else candidate

    def get(self, token: str, generation: bytes | None) -> P | None:
        """The principal remembered for `token`, if authenticated under `generation`."""
        if generation is None:
            return None
        digest = hashlib.sha256(token.encode()).digest()
        with self._lock:
            entry = self._entries.get(digest)
            if entry is None:
                return None
            if entry.generation != generation or entry.expires < time.monotonic():
                del self._entries[digest]
                return None
            self._entries.move_to_end(digest)
            return entry.principal

    def put(self, token: str, principal: P, generation: bytes | None) -> None:
        """Remember `principal`, authenticated after `generation` was read."""
        if generation is None:
            return
        digest = hashlib.sha256(token.encode()).digest()
        with self._lock:
            self._entries[digest] = _Entry(principal, generation, time.monotonic() + TTL_S)
            self._entries.move_to_end(digest)
            while len(self._entries) > MAX_ENTRIES:
                self._entries.popitem(last=False)
