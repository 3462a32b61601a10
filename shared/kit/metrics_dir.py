"""Where multiprocess metrics live. Kept apart from shared.kit.metrics on purpose: the directory
must be chosen before prometheus_client is first imported, which decides its storage then."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Final

MULTIPROC_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"


def prepare(role: str) -> Path:
    """Point this process and its children at an empty multiprocess directory."""
    existing = os.environ.get(MULTIPROC_ENV)
    if existing:
        path = Path(existing)
        path.mkdir(parents=True, exist_ok=True)
    else:
        path = Path(tempfile.mkdtemp(prefix=f"publisher-{role}-metrics-"))
        os.environ[MULTIPROC_ENV] = str(path)
    # Files of a previous run would be summed in.
    for child in path.iterdir():
        if child.is_file():
            child.unlink()
        else:
            shutil.rmtree(child)
    return path
