# syntax=docker/dockerfile:1
#
# mailroom: PostgreSQL outbox -> AWS SES delivery daemon.
#
#   docker build -t mailroom .
#   docker run --rm -e MAILROOM_DATABASE_URL=... -e AWS_DEFAULT_REGION=eu-west-1 mailroom
#   docker run --rm -e MAILROOM_DATABASE_URL=... mailroom migrate
#
# Both stages use the same base image: the venv's interpreter is a symlink to the base
# image's /usr/local/bin/python3.11, so the venv only works on the image it was built on.
# Pin the base by digest in your registry mirror (python:3.11-slim-bookworm@sha256:...)
# for reproducible builds.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --------------------------------------------------------------------------- builder
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /src

# Every dependency ships manylinux wheels (mailroom[binary]: psycopg-binary bundles libpq,
# which the slim image does not have), so the builder
# needs no compiler either. Should one ever be needed, apt-get install build-essential
# here: nothing from this stage but the venv reaches the final image.
#
# The venv is created without pip and filled by the base image's pip (--python), so the
# final image carries neither pip nor setuptools: nothing to install packages at run time.
RUN python -m venv --without-pip /opt/mailroom/venv

# README.md is the project's readme (hatchling reads it for the metadata); sql/ holds the
# migrations, which the package reaches through the symlink src/mailroom/migrations ->
# ../../sql, so it must be in the build context next to src/ (see .dockerignore).
COPY pyproject.toml README.md ./
COPY sql/ sql/
COPY src/ src/

# pip byte-compiles everything it installs: the read-only root filesystem at run time then
# never needs to write a .pyc. The last command fails the build if the migrations were
# not packaged (a broken symlink would otherwise only show up at `mailroom migrate`).
RUN pip --python /opt/mailroom/venv/bin/python install --no-cache-dir './[binary]' \
 && /opt/mailroom/venv/bin/python -c "import importlib.resources as r; \
assert any(p.name.endswith('.sql') for p in r.files('mailroom').joinpath('migrations').iterdir()), 'no migrations'" \
 && /opt/mailroom/venv/bin/mailroom --help > /dev/null

# ----------------------------------------------------------------------------- final
FROM ${PYTHON_IMAGE}

ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="mailroom" \
      org.opencontainers.image.description="PostgreSQL transactional-email outbox delivered through AWS SES" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="MIT"

# A fixed numeric user, so Kubernetes' runAsNonRoot can verify it without a passwd lookup
# (USER below is numeric for that reason). No home directory: nothing is written at run time.
RUN groupadd --system --gid 10001 mailroom \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
            --home-dir /nonexistent --shell /usr/sbin/nologin mailroom

COPY --from=builder /opt/mailroom/venv /opt/mailroom/venv

ENV PATH=/opt/mailroom/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MAILROOM_LOG_FORMAT=json

# Only used by debug mode (MAILROOM_DEBUG=true writes would-be SES requests to ./output).
WORKDIR /var/lib/mailroom
RUN chown 10001:10001 /var/lib/mailroom

USER 10001:10001

# /metrics, /healthz, /readyz
EXPOSE 9765

# No tini (nor `docker run --init`) is needed: the daemon runs as PID 1 straight from the
# exec-form ENTRYPOINT (no shell in between), installs its own SIGTERM/SIGINT handlers
# (PID 1 gets no default signal action, so a handler is required, and it has one), and
# starts no child processes - SES calls run on its event loop - so there are no zombies to reap.
# `mailroom check` from HEALTHCHECK is started by the runtime (docker exec), not by PID 1.
STOPSIGNAL SIGTERM

# Readiness: database reachable, LISTEN alive, not draining. Docker only uses it for
# `docker ps` / compose depends_on; Kubernetes ignores it and uses the probes.
# start-period covers the connect + LISTEN set-up at start.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["mailroom", "check"]

ENTRYPOINT ["mailroom"]
CMD ["run"]
