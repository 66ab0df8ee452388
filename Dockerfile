# The platform image: Dagster, the platform code and the policies, installed from uv.lock.
# Tenant YAML is not in it: each tenant's location reads its definitions from its own ConfigMap,
# mounted at MLPLAT_DEFS_ROOT, so a tenant's change rolls only that tenant's location.
# `make image` builds it; `make image-test` builds it on a local Debian base and runs it.
#
# PYTHON_IMAGE: any Debian bookworm image with python3.11 and venv on PATH as `python3` (the
# official image by default; `make image-test` passes one made with debootstrap).
# The `ca` build secret: the host's CA bundle, for builds behind a TLS-intercepting proxy. It is
# mounted for the RUN steps that reach the package index only, never written to a layer.
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

# --- build: resolve nothing, install the locked environment into /app/.venv ---------------
FROM ${PYTHON_IMAGE} AS build
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=python3 \
    UV_NATIVE_TLS=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# uv in a venv of its own: Debian's python3 refuses installs into the system (PEP 668).
RUN --mount=type=secret,id=ca,target=/run/secrets/ca.pem \
    if [ -s /run/secrets/ca.pem ]; then export PIP_CERT=/run/secrets/ca.pem; fi \
    && python3 -m venv /opt/uv \
    && /opt/uv/bin/pip install --no-cache-dir uv==0.13.10
WORKDIR /app
# Dependencies first, so a code change reinstalls only the project itself.
COPY pyproject.toml uv.lock README.md ./
RUN --mount=type=secret,id=ca,target=/run/secrets/ca.pem \
    --mount=type=cache,target=/root/.cache/uv \
    if [ -s /run/secrets/ca.pem ]; then export SSL_CERT_FILE=/run/secrets/ca.pem; fi \
    && /opt/uv/bin/uv sync --frozen --no-dev --no-install-project
COPY platform_assets ./platform_assets
COPY policies ./policies
COPY deploy ./deploy
COPY workspace.yaml dagster.yaml ./
# The project itself (hatchling, its build backend, comes from the index too).
RUN --mount=type=secret,id=ca,target=/run/secrets/ca.pem \
    --mount=type=cache,target=/root/.cache/uv \
    if [ -s /run/secrets/ca.pem ]; then export SSL_CERT_FILE=/run/secrets/ca.pem; fi \
    && /opt/uv/bin/uv sync --frozen --no-dev

# --- runtime: the same Python, the venv and the code; no uv, pip or compilers ---------------
FROM ${PYTHON_IMAGE}
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# libatomic1: regopy's policy engine (a Rust/C++ shared library) links it; libgomp1: LightGBM's
# wheel links the system's OpenMP (XGBoost's and scikit-learn's bring their own); slim and
# minbase images carry neither. pip only where the base image has one (the official image does).
RUN apt-get update \
    && apt-get install -y --no-install-recommends libatomic1=12.2.0-14+deb12u1 libgomp1=12.2.0-14+deb12u1 \
    && rm -rf /var/lib/apt/lists/* \
    && if python3 -m pip --version >/dev/null 2>&1; then \
        python3 -m pip uninstall --yes pip setuptools wheel; fi \
    && groupadd --system --gid 10001 mlplat \
    && useradd --system --uid 10001 --gid mlplat --home-dir /app --shell /usr/sbin/nologin mlplat
# Owned by root and read-only to the platform user: pods run with a read-only root filesystem.
COPY --from=build /app /app
# Pods mount an emptyDir on /tmp, the only writable path: home, working data and Dagster's
# local files live there. DAGSTER_HOME holds only the instance's dagster.yaml (in the image for
# a bare `docker run`; the chart mounts its own over it), which keeps Dagster's local storage
# and logs under /tmp/dagster.
COPY deploy/image/dagster.yaml /opt/dagster/dagster_home/dagster.yaml
ENV PATH=/app/.venv/bin:$PATH \
    DAGSTER_HOME=/opt/dagster/dagster_home \
    HOME=/tmp \
    MLPLAT_DATA=/tmp/mlplat \
    MLPLAT_DEFS_ROOT=/etc/mlplat/defs \
    MLPLAT_ENV=k8s \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
WORKDIR /app
USER 10001:10001
EXPOSE 3030
# The platform code location; the Helm values start each tenant's with its own attribute.
CMD ["dagster", "api", "grpc", "--module-name", "platform_assets.locations", "--attribute", "platform", "--host", "0.0.0.0", "--port", "3030"]
