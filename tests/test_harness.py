"""The test harness itself: a stack cleans up after its processes, killed ones included."""

from __future__ import annotations

import os
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from harness.stack import Stack
from shared.kit.db import drop_database
from shared.kit.migrate import migrate

pytestmark = pytest.mark.integration

LEFTOVERS = ("publisher-worker-metrics-*", "pymp-*")


def _leftovers(directory: Path) -> set[Path]:
    return {path for pattern in LEFTOVERS for path in directory.glob(pattern)}


@pytest.fixture
def own_database(database: str) -> Iterator[str]:
    """A database of this test's own, so its stack's beat and workers touch nobody's posts."""
    url = make_url(database)
    own = url.set(database=f"{url.database}_harness").render_as_string(hide_password=False)
    drop_database(own)
    migrate(own)
    yield own
    drop_database(own)


def test_a_stopped_stack_leaves_nothing_in_the_temp_directory(
    own_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker that exits cleanly removes its metrics directory (and multiprocessing its
    pymp-* folder); what a killed worker leaves goes when the stack stops, with the logs."""
    # The temp directory this test's process, and so the stack, uses.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    stack = Stack(database_url=own_database, workers=1, concurrency=2)
    assert stack.logdir.parent == tmp_path
    try:
        stack.start()
        killed = _leftovers(stack.tmpdir)
        assert {p.name.split("-")[0] for p in killed} == {"publisher", "pymp"}, killed

        worker = stack.procs["worker0"]
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
        assert _leftovers(stack.tmpdir) == killed  # nothing of a kill -9 cleans up

        stack.start_worker("worker0")
        restarted = _leftovers(stack.tmpdir) - killed
        assert len(restarted) == 2, restarted
        worker = stack.procs["worker0"]
        worker.send_signal(signal.SIGTERM)  # a warm shutdown: a clean exit
        assert worker.wait(timeout=30) == 0
        assert _leftovers(stack.tmpdir) == killed
    finally:
        stack.stop()
    assert list(tmp_path.iterdir()) == []
