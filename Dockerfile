# syntax=docker/dockerfile:1
# One image for every role: the `publisher` CLI is the entrypoint and the command picks the
# role (api, worker, beat, flower, sandbox, migrate, healthcheck ...).
#
#   docker build -t publisher .
#   docker run --rm publisher --help
#   docker run --rm -e DATABASE_URL=... publisher migrate
#
# The base tag is pinned to a Python minor on Debian slim; pin its digest too
# (python:3.11-slim@sha256:...) where builds must be reproducible bit for bit.

# ---- builder: wheels of the project and of every dependency ---------------------------------
FROM python:3.11-slim AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
# The context (.dockerignore keeps out .git, .venv, tests, deploy, caches, any .env); the
# wheel takes only the packages pyproject.toml lists.
COPY . .

# Every dependency ships a manylinux wheel (psycopg[binary] included), so no compiler is
# needed even here. The cache mount keeps downloads between builds and out of the layer.
RUN --mount=type=cache,target=/root/.cache/pip \
    pip wheel --wheel-dir /wheels .

# ---- runtime: the wheels installed, no build tools, not root -------------------------------
FROM python:3.11-slim AS runtime

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1 \
    STATE_DIR=/var/lib/publisher

# The wheels are bind-mounted from the builder for this one step, so they never become a
# layer of the final image; --no-index installs exactly what the builder resolved.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels /wheels/publisher-*.whl \
    && groupadd --system --gid 10001 publisher \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin publisher \
    && mkdir -p /var/lib/publisher \
    && chown 10001:10001 /var/lib/publisher

# Beat keeps its schedule file here (STATE_DIR); everything else writes only to /tmp.
WORKDIR /var/lib/publisher

# Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001

# api 8000, api metrics 9807 (`--metrics-port`), worker metrics 9808, flower 5555, sandbox 8900.
EXPOSE 8000 9807 9808 5555 8900

ENTRYPOINT ["publisher"]
CMD ["api", "--host", "0.0.0.0", "--port", "8000"]
