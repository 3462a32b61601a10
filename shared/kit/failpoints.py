"""Named pause points in the publish protocol, for fault-injection tests and chaos runs.

A failpoint does nothing unless FAILPOINTS_FILE names a file (never in production). Each
line of that file is `name=seconds`: the process reaching `name` logs it (with its pid, so a
test can kill exactly that process) and sleeps. Each hit re-reads the file once it changed
(its inode, modification time or size), so a test can arm and disarm points while workers run.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from shared.kit.settings import get_settings

log = logging.getLogger("publisher.failpoints")


# The file's parsed lines, with the (inode, mtime, size) they were read at: a hit costs one
# stat while the file is unchanged.
_cache: tuple[tuple[int, int, int], dict[str, float]] | None = None


def _read(path: str) -> dict[str, float]:
    global _cache  # noqa: PLW0603 - one parsed copy per process
    try:
        stat = os.stat(path)
        stamp = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        if _cache is not None and _cache[0] == stamp:
            return _cache[1]
        text = Path(path).read_text()
    except OSError:
        return {}
    points: dict[str, float] = {}
    for line in text.splitlines():
        key, _, value = line.partition("=")
        try:
            points.setdefault(key.strip(), float(value))
        except ValueError:
            continue
    _cache = (stamp, points)
    return points


def _armed(name: str) -> float | None:
    settings = get_settings()
    if settings.environment == "production" or not settings.failpoints_file:
        return None
    return _read(settings.failpoints_file).get(name)


def hit(name: str, post_id: str) -> None:
    """Pause here if the failpoint `name` is armed."""
    seconds = _armed(name)
    if seconds is None:
        return
    log.warning("failpoint %s post=%s pid=%d sleeping %.1fs", name, post_id, os.getpid(), seconds)
    time.sleep(seconds)
