"""Per-key rate limits in Redis (GCRA), shared by every API process."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Final

import redis

from shared.kit.settings import get_settings

log = logging.getLogger("publisher.ratelimit")

# GCRA on the server's clock (so API hosts' clocks never matter): one key per (api key,
# class) holding the theoretical arrival time. Returns allowed, retry-after ms, remaining,
# reset ms.
_SCRIPT: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
if new_tat - burst > now then
  return {0, new_tat - burst - now, 0, tat - now}
end
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil(burst))
return {1, 0, math.floor((burst - (new_tat - now)) / interval), new_tat - now}
"""


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    retry_after_s: float
    reset_s: float

    def headers(self) -> dict[str, str]:
        """The `X-RateLimit-*` headers (and `Retry-After` when refused)."""
        out = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(math.ceil(self.reset_s)),
        }
        if not self.allowed:
            out["Retry-After"] = str(max(1, math.ceil(self.retry_after_s)))
        return out


class RateLimiter:
    """`limit` requests per minute per (key, class), with bursts up to `limit`."""

    def __init__(self, url: str) -> None:
        self._client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self._script = self._client.register_script(_SCRIPT)

    def check(self, key_id: str, klass: str, limit: int) -> Decision | None:
        """The decision, or None when Redis cannot be asked (fail open: limits protect the
        service, and refusing every request while Redis is down would be worse)."""
        interval = 60_000 / limit
        try:
            allowed, retry_ms, remaining, reset_ms = self._script(
                keys=[f"publisher:ratelimit:{klass}:{key_id}"], args=[interval, 60_000]
            )
        except redis.RedisError as exc:
            log.warning("rate limiter unavailable: %s", type(exc).__name__)
            return None
        return Decision(
            bool(allowed), limit, int(remaining), int(retry_ms) / 1000, int(reset_ms) / 1000
        )


_limiter: RateLimiter | None = None


def limiter() -> RateLimiter:
    """This process's limiter, on REDIS_URL."""
    global _limiter  # noqa: PLW0603 - one client per process
    if _limiter is None:
        _limiter = RateLimiter(get_settings().redis_url)
    return _limiter
