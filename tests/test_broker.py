"""The API's and workers' sender under concurrency: revokes and sends from many threads at
once (the API's thread pool), against the real broker."""

from __future__ import annotations

import threading
import time
import uuid

from shared.publishing import tasks


def test_concurrent_revokes_never_starve_the_broker_pool() -> None:
    """A revoke broadcast used to take two of the pool's connections, one for the broadcast
    and one for its producer; enough concurrent cancels each holding the first and waiting
    for the second left none free, and every one of them waited forever. 64 threads revoking
    at once, each several times, must all finish."""
    threads_n, rounds = 64, 5
    start = threading.Barrier(threads_n)
    done: list[int] = []

    def revoker(i: int) -> None:
        start.wait(timeout=30)
        for _ in range(rounds):
            tasks.revoke(str(uuid.uuid4()))
        done.append(i)

    threads = [threading.Thread(target=revoker, args=(i,), daemon=True) for i in range(threads_n)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    for t in threads:
        t.join(timeout=max(0.0, deadline - time.monotonic()))
    assert len(done) == threads_n, f"{threads_n - len(done)} threads still waiting on the pool"
