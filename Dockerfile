# DICOM Lab images: one shared base stage, one target per service.
#   docker build --target pacs         -t dicomlab-pacs .
#   docker build --target admin-api    -t dicomlab-admin-api .
#   docker build --target ct-simulator -t dicomlab-ct-simulator .
# Build context: the repository root. Every image installs from the one lock, uv.lock
# (`make lock` refreshes it): third-party packages first, hash-checked, then the code.
ARG PYTHON_IMAGE=python:3.11-slim
FROM ${PYTHON_IMAGE} AS base

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UV_PROJECT_ENVIRONMENT=/opt/venv \
    UV_PYTHON_DOWNLOADS=never \
    UV_SYSTEM_CERTS=1 \
    UV_LINK_MODE=copy \
    UV_NO_CACHE=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# uv (pinned as in the lock's dev group) in a venv of its own; the lab user.
RUN python -m venv /opt/uv \
 && /opt/uv/bin/pip install "uv==0.13.9" \
 && ln -s /opt/uv/bin/uv /usr/local/bin/uv \
 && groupadd --gid 10001 lab \
 && useradd --uid 10001 --gid lab --home-dir /app --no-create-home --no-log-init --shell /usr/sbin/nologin lab
WORKDIR /app
# The workspace's manifests and its lock: enough to install every third-party package.
COPY pyproject.toml uv.lock ./
COPY common/pyproject.toml common/pyproject.toml
COPY pacs/pyproject.toml pacs/pyproject.toml
COPY admin-api/pyproject.toml admin-api/pyproject.toml
COPY ct-simulator/pyproject.toml ct-simulator/pyproject.toml


# -- the PACS receiver: DICOM Storage, Verification, Storage Commitment and Q/R SCP -----
FROM base AS pacs
RUN uv sync --frozen --no-dev --package dicomlab-pacs --no-install-workspace
COPY common common
COPY pacs pacs
RUN uv sync --frozen --no-dev --package dicomlab-pacs --no-editable \
 && mkdir -p /data/storage /data/tls && chown lab:lab /data/storage /data/tls
ENV PACS_STORAGE_DIR=/data/storage \
    PACS_TLS_DIR=/data/tls \
    PACS_PORT=104
VOLUME ["/data/storage", "/data/tls"]
USER lab
EXPOSE 104
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-m", "pacs.healthcheck"]
CMD ["python", "-m", "pacs", "--bind", "0.0.0.0"]


# -- the admin API and the "DICOM Lab" web page: Flask under gunicorn -------------------
FROM base AS admin-api
RUN uv sync --frozen --no-dev --package dicomlab-admin-api --no-install-workspace
# The code. gunicorn.conf.py is read from the source folder, so the folder stays.
COPY common common
COPY admin-api admin-api
RUN uv sync --frozen --no-dev --package dicomlab-admin-api --no-editable \
 && mkdir -p /data/tls && chown lab:lab /data/tls
ENV ADMIN_PORT=8080
USER lab
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/api/health' % os.environ.get('ADMIN_PORT', '8080'), timeout=3)"]
# --bind on the command line wins over the configuration file: reachable through the published port.
CMD ["gunicorn", "-c", "admin-api/gunicorn.conf.py", "--bind", "0.0.0.0:8080", "admin_api:create_app()"]


# -- the CT simulator: a worker that takes send jobs from Redis and answers C-ECHO, ------
# -- and the `ct-simulator` command line for one-off runs --------------------------------
FROM base AS ct-simulator
RUN uv sync --frozen --no-dev --package dicomlab-ct-simulator --no-install-workspace
COPY common common
COPY ct-simulator ct-simulator
RUN uv sync --frozen --no-dev --package dicomlab-ct-simulator --no-editable \
 && mkdir -p /data/out && chown lab:lab /data/out
ENV SIM_PORT=104
USER lab
EXPOSE 104
# Alive when the worker's C-ECHO port accepts a connection.
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import os, socket; socket.create_connection(('127.0.0.1', int(os.environ.get('SIM_PORT', '104'))), 3).close()"]
CMD ["ct-simulator", "worker"]
