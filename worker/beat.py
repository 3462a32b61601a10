"""`publisher beat` without the rule of one: any number may run, on any hosts. Each competes
for the ticks' control lease (shared/kit/leases.py) and only its holder sends the dispatcher,
reaper and poll ticks; a holder killed or cut off stops renewing and another beat takes
over once the lease expires (BEAT_LEASE_S). The ticks are safe to run twice anyway (SKIP
LOCKED, tokens on the rows): the lease keeps the second beat from doubling their cost."""

from __future__ import annotations

import logging
import os
import socket
import uuid
from typing import Any, Final

from celery.beat import PersistentScheduler
from sqlalchemy.exc import SQLAlchemyError

from shared.kit.db import init_engine
from shared.kit.leases import Holding
from shared.kit.settings import get_settings

log = logging.getLogger("publisher.beat")

TICKS_LEASE: Final = "beat.ticks"


class LeaderScheduler(PersistentScheduler):
    """Celery beat's scheduler, sending only while this beat holds the ticks' lease."""

    lease: Holding

    def setup_schedule(self) -> None:
        super().setup_schedule()
        settings = get_settings()
        init_engine("publisher.beat", pool_size=1)
        self.lease = Holding(
            TICKS_LEASE,
            holder=f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}",
            ttl_s=settings.beat_lease_s,
            # Renewed five times per lease; acted on until a fifth of it is left.
            renew_s=settings.beat_lease_s / 5,
            margin_s=settings.beat_lease_s / 5,
        )
        self._leading = False

    def tick(self, *args: Any, **kwargs: Any) -> float:
        held = self.lease.held()
        if held != self._leading or (held and self.lease.just_taken):
            self._leading = held
            log.info(
                "this beat %s the ticks (lease %s)",
                "sends" if held else "no longer sends",
                self.lease.holder,
            )
        if not held:
            return self.lease.renew_s
        delay: float = super().tick(*args, **kwargs)
        return min(delay, self.lease.renew_s)

    def close(self) -> None:
        """A clean stop hands the ticks over at once rather than when the lease expires."""
        try:
            self.lease.release()
        except SQLAlchemyError:
            log.warning("could not release the ticks' lease; it expires by itself")
        super().close()
