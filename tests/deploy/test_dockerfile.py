"""The Dockerfile and .dockerignore: entrypoint, user, hygiene, the build context, and the
wheel the builder stage makes of it (built here without Docker)."""

from __future__ import annotations

import re
import tomllib
import zipfile
from pathlib import Path

from tests.deploy.helpers import (
    NON_SETTINGS_ENV,
    ROOT,
    SETTINGS_ENV,
    _builder_copies,
    _copied,
    _dockerignore_rules,
    _excluded,
    _exec_form,
    _final_stage,
    _image_uid,
    _parse_cli,
    build_context,
    dockerfile_instructions,
)


def test_dockerfile_entrypoint_is_the_cli_and_the_user_is_not_root() -> None:
    final = _final_stage()
    (entrypoint,) = [i for i in final if i.keyword == "ENTRYPOINT"]
    assert _exec_form(entrypoint) == ["publisher"]
    (cmd,) = [i for i in final if i.keyword == "CMD"]
    argv = _exec_form(cmd)
    assert argv == ["api", "--host", "0.0.0.0", "--port", "8000"]
    assert _parse_cli(["publisher", *argv]).command == "api"
    assert _image_uid() != 0
    # Every ENV the image sets is a setting or documented.
    for instruction in dockerfile_instructions():
        if instruction.keyword == "ENV":
            names = re.findall(r"(?:^|\s)([A-Za-z_][A-Za-z0-9_]*)=", instruction.args)
            assert names
            for name in names:
                assert name in SETTINGS_ENV or name in NON_SETTINGS_ENV, name


def test_dockerfile_hygiene() -> None:
    instructions = dockerfile_instructions()
    froms = [i.args.split() for i in instructions if i.keyword == "FROM"]
    assert len(froms) >= 2, "multi-stage: a builder and a runtime stage"
    stage_names = {f[2].lower() for f in froms if len(f) == 3 and f[1].upper() == "AS"}
    for f in froms:
        image = f[0]
        if image.lower() in stage_names:
            continue
        name, _, tag = image.rpartition(":")
        assert name and tag and tag != "latest", f"pin a tag: FROM {image}"
    assert froms[-1][0] == "python:3.11-slim"

    final = _final_stage()
    for i in final:
        # The wheels are bind-mounted for the install, never copied into a layer.
        assert not (i.keyword in {"COPY", "ADD"} and "/wheels" in i.args), i.args
        assert not re.search(r"\b(gcc|g\+\+|build-essential|make|python3-dev)\b", i.args), i.args
        if i.keyword == "RUN" and "pip install" in i.args:
            assert "--no-cache-dir" in i.args
    for i in instructions:
        assert not (i.keyword == "ADD" and "://" in i.args), "ADD of a URL"
        if i.keyword == "RUN" and "apt-get install" in i.args:
            assert "--no-install-recommends" in i.args
            assert "rm -rf /var/lib/apt/lists/*" in i.args, "apt lists left in the layer"
    runs_as = [i.args for i in final if i.keyword == "USER"]
    assert runs_as and runs_as[-1] not in {"root", "0", "0:0"}


def test_build_context_holds_what_the_wheel_needs_and_nothing_else() -> None:
    context = build_context()
    for unwanted in (".venv/", ".git/", "tests/", "var/", "deploy/", ".env", "__pycache__/"):
        assert not any(f.startswith(unwanted) or f"/{unwanted}" in f for f in context), unwanted
    rules = _dockerignore_rules()
    assert not _excluded("api/app.py", rules)
    assert _excluded(".env", rules) and _excluded("deploy/prod.env", rules)
    # Every package that pyproject.toml ships reaches the builder, with all its files.
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = [
        p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    ]
    sources = _builder_copies()
    copied = {f for f in context if _copied(f, sources)}
    assert {"pyproject.toml", pyproject["project"]["readme"]} <= copied
    for package in packages:
        files = [p.relative_to(ROOT).as_posix() for p in (ROOT / package).rglob("*.py")]
        files = [f for f in files if "__pycache__" not in f]
        assert files and set(files) <= copied, f"{package}/ does not reach the builder"
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: no such file"


def test_the_wheel_carries_the_cli_and_the_migrations(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        assert "publisher = cli.main:main" in zf.read(entry_points).decode()
    migrations = (ROOT / "shared" / "migrations").rglob("*")
    wanted = {p.relative_to(ROOT).as_posix() for p in migrations if p.suffix in {".py", ".mako"}}
    wanted = {w for w in wanted if "__pycache__" not in w}
    assert wanted <= names, wanted - names
    assert {"cli/__main__.py", "cli/main.py", "api/app.py", "worker/celery_app.py"} <= names
    assert not any(n.startswith("tests/") for n in names)
