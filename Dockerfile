# The platform image: Dagster, the platform code, the team YAML and the policies, installed
# from uv.lock. `make image` builds it (where a Docker engine runs); the tests lint it.
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

# --- build: resolve nothing, install the locked environment into /app/.venv ---------------
FROM ${PYTHON_IMAGE} AS build
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN pip install --no-cache-dir uv==0.13.9
WORKDIR /app
# Dependencies first, so a code change reinstalls only the project itself.
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project
COPY platform_assets ./platform_assets
COPY policies ./policies
COPY deploy ./deploy
COPY workspace.yaml dagster.yaml ./
RUN uv sync --frozen --no-dev

# --- runtime: the same Python, the venv and the code; no uv, pip or compilers ---------------
FROM ${PYTHON_IMAGE}
RUN python -m pip uninstall --yes pip setuptools wheel \
    && groupadd --system --gid 10001 mlplat \
    && useradd --system --uid 10001 --gid mlplat --home-dir /app --shell /usr/sbin/nologin mlplat \
    && mkdir -p /opt/dagster/dagster_home \
    && chown mlplat:mlplat /opt/dagster/dagster_home
# Owned by root and read-only to the platform user: pods run with a read-only root filesystem.
COPY --from=build /app /app
# Pods mount an emptyDir on /tmp, the only writable path: home and working data live there.
ENV PATH=/app/.venv/bin:$PATH \
    DAGSTER_HOME=/opt/dagster/dagster_home \
    HOME=/tmp \
    MLPLAT_DATA=/tmp/mlplat \
    MLPLAT_ENV=k8s \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
WORKDIR /app
USER 10001:10001
EXPOSE 3030
# The platform code location; the Helm values start each tenant's with its own attribute.
CMD ["dagster", "api", "grpc", "--module-name", "platform_assets.locations", "--attribute", "platform", "--host", "0.0.0.0", "--port", "3030"]
