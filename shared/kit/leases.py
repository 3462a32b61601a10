"""Control leases: which of several interchangeable processes does a piece of control work
now (sending the ticks: worker/beat.py). A lease is a row of `control_leases`, taken and
renewed by one statement that succeeds only for its holder or once it expired, on the
database's clock, so the hosts' clocks never matter. A holder that stops renewing (killed,
partitioned, its database gone) loses the lease when it expires; it must itself stop
acting before that, by its own monotonic clock (`Holding`)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Final

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from shared.kit.db import engine

_TAKE: Final = text(
    "INSERT INTO control_leases (name, holder, expires_at, acquired_at)"
    " VALUES (:name, :holder, now() + make_interval(secs => :ttl), now())"
    " ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder,"
    " expires_at = EXCLUDED.expires_at,"
    " acquired_at = CASE WHEN control_leases.holder = EXCLUDED.holder"
    " THEN control_leases.acquired_at ELSE now() END"
    " WHERE control_leases.holder = EXCLUDED.holder OR control_leases.expires_at < now()"
    " RETURNING acquired_at = now() AS new"
)
_RELEASE: Final = text("DELETE FROM control_leases WHERE name = :name AND holder = :holder")


def take(name: str, holder: str, ttl_s: float) -> bool | None:
    """Take or renew the lease for `ttl_s` seconds: None if another holder has it, else
    whether it was just taken (True) or renewed (False)."""
    with engine().begin() as conn:
        row = conn.execute(_TAKE, {"name": name, "holder": holder, "ttl": ttl_s}).first()
    return None if row is None else bool(row.new)


def release(name: str, holder: str) -> None:
    """Give the lease up at once (a clean stop), so another process need not wait it out."""
    with engine().begin() as conn:
        conn.execute(_RELEASE, {"name": name, "holder": holder})


@dataclass
class Holding:
    """One process's view of a lease it competes for. `held()` renews at most every
    `renew_s` and says whether this process may act: only while its last successful renewal,
    as its own monotonic clock measured it from before the statement, is younger than the
    lease's time to live less `margin_s`. The database's expiry is later than that, so two
    holders never act at once while clocks run at the same rate."""

    name: str
    holder: str
    ttl_s: float
    renew_s: float
    margin_s: float
    # The last renewal took the lease from nobody or from an expired holder.
    just_taken: bool = field(default=False, init=False)
    _valid_until: float = field(default=float("-inf"), init=False)
    _renewed_at: float = field(default=float("-inf"), init=False)

    def held(self) -> bool:
        now = time.monotonic()
        if now - self._renewed_at >= self.renew_s:
            self._renewed_at = now
            try:
                taken = take(self.name, self.holder, self.ttl_s)
            except SQLAlchemyError:
                # No database: act on only while the last renewal lasts; ask again in a second.
                self._renewed_at = now - self.renew_s + min(1.0, self.renew_s)
            else:
                self.just_taken = taken is True
                held_until = now + self.ttl_s - self.margin_s
                self._valid_until = float("-inf") if taken is None else held_until
        return time.monotonic() < self._valid_until

    def seconds_valid(self) -> float:
        """How long this process may still act without renewing (0 if not the holder)."""
        return max(0.0, self._valid_until - time.monotonic())

    def release(self) -> None:
        if self._valid_until > time.monotonic():
            self._valid_until = float("-inf")
            release(self.name, self.holder)
