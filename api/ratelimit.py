"""Rate limits in Redis, shared by every API process: a GCRA bucket per (key, endpoint class)
and a counter per organization and UTC day of the writes it was let make."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Final

import redis
from starlette.datastructures import State

from shared.tenancy.tiers import EndpointClass

log = logging.getLogger("publisher.ratelimit")

CLASS_HEADER: Final = "X-RateLimit-Endpoint-Class"
MINUTE_MS: Final = 60_000

# One round trip, on the Redis server's clock (so API hosts' clocks never matter).
# KEYS[1] holds the (key, class) bucket's theoretical arrival time (GCRA); KEYS[2] the
# organization's writes of one UTC day, as {day, count}. ARGV: the bucket's interval and burst
# (ms), the daily cap (0: a read, not counted) and how far the day boundary is moved (ms;
# tests move it, the service never does). A refused request changes neither: the minute
# bucket is asked first and a refusal there costs no daily write, and a refusal by the daily
# cap costs no minute budget.
# Returns allowed, refused by the day (1) or the minute (0), retry-after ms, remaining, reset ms.
_SCRIPT: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cap = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
if new_tat - burst > now then
  return {0, 0, new_tat - burst - now, 0, tat - now}
end
if cap > 0 then
  local clock = now + tonumber(ARGV[4])
  local day = math.floor(clock / 86400000)
  local to_midnight = (day + 1) * 86400000 - clock
  local stored = redis.call('HMGET', KEYS[2], 'day', 'count')
  local count = 0
  if tonumber(stored[1]) == day then count = tonumber(stored[2]) end
  if count >= cap then
    return {0, 1, to_midnight, 0, to_midnight}
  end
  redis.call('HSET', KEYS[2], 'day', day, 'count', count + 1)
  redis.call('PEXPIRE', KEYS[2], math.ceil(to_midnight))
end
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil(burst))
return {1, 0, 0, math.floor((burst - (new_tat - now)) / interval), new_tat - now}
"""


def bucket_key(key_id: str, klass: EndpointClass) -> str:
    """The Redis key of one API key's bucket of one class."""
    return f"publisher:ratelimit:{klass}:{key_id}"


def day_key(organization_id: str) -> str:
    """The Redis key of one organization's writes today."""
    return f"publisher:ratelimit:day:{organization_id}"


@dataclass(frozen=True)
class Decision:
    """What the bucket that decided says: the minute bucket's, or on a refusal by the daily
    cap, the day's (`limit` then is the cap, `reset_s` the time to the next UTC midnight)."""

    allowed: bool
    klass: EndpointClass
    window: str  # "minute" | "day"
    limit: int
    remaining: int
    retry_after_s: float
    reset_s: float

    def headers(self) -> dict[str, str]:
        """The `X-RateLimit-*` headers (and `Retry-After` when refused)."""
        out = {
            CLASS_HEADER: self.klass.value,
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(math.ceil(self.reset_s)),
        }
        if not self.allowed:
            out["Retry-After"] = str(max(1, math.ceil(self.retry_after_s)))
        return out


class RateLimiter:
    """`per_minute` requests per (key, class), with bursts up to it; for writes, also at most
    `daily_cap` a UTC day per organization. One per API app (`app.state.limiter`)."""

    def __init__(self, url: str, *, day_shift_ms: int = 0) -> None:
        self._client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self._script = self._client.register_script(_SCRIPT)
        self._day_shift_ms = day_shift_ms

    def check(
        self,
        key_id: str,
        klass: EndpointClass,
        per_minute: int,
        *,
        organization_id: str,
        daily_cap: int | None = None,
    ) -> Decision | None:
        """The decision, or None when Redis cannot be asked (fail open: limits protect the
        service, and refusing every request while Redis is down would be worse). A
        `daily_cap` counts this request against the organization's day."""
        interval = MINUTE_MS / per_minute
        try:
            allowed, by_day, retry_ms, remaining, reset_ms = self._script(
                keys=[bucket_key(key_id, klass), day_key(organization_id)],
                args=[interval, MINUTE_MS, daily_cap or 0, self._day_shift_ms],
            )
        except redis.RedisError as exc:
            log.warning("rate limiter unavailable: %s", type(exc).__name__)
            return None
        return Decision(
            bool(allowed),
            klass,
            "day" if by_day else "minute",
            (daily_cap or 0) if by_day else per_minute,
            int(remaining),
            int(retry_ms) / 1000,
            int(reset_ms) / 1000,
        )

    @property
    def client(self) -> redis.Redis:
        """Its Redis client (the key cache asks the same server)."""
        return self._client

    def close(self) -> None:
        self._client.close()


def limiter_of(state: State) -> RateLimiter:
    """The app's limiter, made by `create_app`."""
    limiter = state.limiter
    assert isinstance(limiter, RateLimiter)
    return limiter
