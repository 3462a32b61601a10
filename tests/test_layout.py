"""The layout the README's "Where things are" promises: the edges do not import each other,
the worker reads settings when configured (not at import), one module writes a post's
status, and the README's map matches the tree."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

from harness.stack import ROOT

APP_PACKAGES = ("api", "worker", "shared", "sandbox", "cli")


def _python_files(*packages: str) -> list[Path]:
    return [p for pkg in packages for p in (ROOT / pkg).rglob("*.py")]


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def _run(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_no_api_module_imports_the_worker() -> None:
    for path in _python_files("api"):
        worker = {m for m in _imported_modules(path) if m == "worker" or m.startswith("worker.")}
        assert not worker, f"{path.relative_to(ROOT)} imports {worker}"


def test_the_api_process_never_loads_the_worker() -> None:
    # What `publisher api` loads: the CLI's parser, then the app.
    done = _run(
        "import sys\n"
        "from cli.main import build_parser\n"
        "build_parser()\n"
        "from api.app import create_app\n"
        "create_app()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'worker'))\n"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_the_worker_reads_settings_when_configured_not_at_import() -> None:
    # A setting that fails validation: importing must not notice, configuring must.
    code = (
        "import worker.tasks\n"
        "from worker.celery_app import app\n"
        "print('imported')\n"
        "app.conf.broker_url\n"
    )
    done = _run(code, DISPATCH_INTERVAL_S="-1")
    assert done.stdout.strip() == "imported", done.stderr
    assert done.returncode != 0
    assert "dispatch_interval_s" in done.stderr


def test_one_module_writes_a_posts_status() -> None:
    writers = set()
    for path in _python_files(*APP_PACKAGES):
        for node in ast.walk(ast.parse(path.read_text())):
            targets = node.targets if isinstance(node, ast.Assign) else []
            for target in targets:
                if (
                    isinstance(target, ast.Attribute)
                    and target.attr == "status"
                    and isinstance(target.value, ast.Name)
                    and target.value.id == "post"
                ):
                    writers.add(str(path.relative_to(ROOT)))
    assert writers == {"shared/publishing/posts.py"}


def test_the_readme_map_matches_the_tree() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Where things are", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    assert rows
    listed: set[str] = set()
    for row in rows:
        folders = re.findall(r"`([\w./-]+/?)`", row.split("|")[1])
        for folder in folders:
            assert (ROOT / folder).exists(), f"the README names {folder}, which is not in the tree"
            listed.add(folder.rstrip("/"))
        # Files named in the row's description live in its (first) folder.
        base = ROOT / folders[0]
        for name in re.findall(r"`([\w/]+\.py)`", row.split("|")[2]):
            if base.is_dir():
                assert (base / name).exists(), f"{folders[0]}{name} is in the README, not the tree"
    # Every package of the application has its row.
    for pkg in APP_PACKAGES:
        assert pkg in listed or any(entry.startswith(f"{pkg}/") for entry in listed), pkg
    for domain in (ROOT / "shared").iterdir():
        if domain.is_dir() and (domain / "__init__.py").exists():
            assert f"shared/{domain.name}" in listed, f"shared/{domain.name} has no row"
