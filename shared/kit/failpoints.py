"""Named pause points in the publish protocol, for fault-injection tests and chaos runs.

A failpoint does nothing unless FAILPOINTS_FILE names a file (never in production). Each
line of that file is `name=seconds`: the process reaching `name` logs it (with its pid, so a
test can kill exactly that process) and sleeps. The file is re-read at every hit, so a test
can arm and disarm points while workers run.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from shared.kit.settings import get_settings

log = logging.getLogger("publisher.failpoints")


def _armed(name: str) -> float | None:
    settings = get_settings()
    if settings.environment == "production" or not settings.failpoints_file:
        return None
    try:
        text = Path(settings.failpoints_file).read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == name:
            try:
                return float(value)
            except ValueError:
                return None
    return None


def hit(name: str, post_id: str) -> None:
    """Pause here if the failpoint `name` is armed."""
    seconds = _armed(name)
    if seconds is None:
        return
    log.warning("failpoint %s post=%s pid=%d sleeping %.1fs", name, post_id, os.getpid(), seconds)
    time.sleep(seconds)
