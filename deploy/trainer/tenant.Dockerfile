# A tenant's trainer image: the platform's trainer base plus the dependencies of the tenant's
# code/ project (wheels only: no source distribution's build script runs) and its source, copied
# in and never built or installed (its build backend would run team code at build time). Built
# by the platform's CI from the tenant's code/ folder as the context, tagged with its
# environment key (models/trainers/pod.py `environment_key`):
#
#   docker build -f deploy/trainer/tenant.Dockerfile \
#     --build-arg BASE=registry.mlplat.example/mlplat-trainer-base:0.1.0 \
#     -t registry.mlplat.example/mlplat-trainer-<tenant>:<environment key> \
#     platform_assets/defs/<tenant>/code
ARG BASE=registry.mlplat.example/mlplat-trainer-base:0.1.0

# --- build: the project's requirements (from uv.lock if it has one), installed as wheels -----
FROM ${BASE} AS build
USER 0
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV UV_NO_CONFIG=1 UV_PYTHON_DOWNLOADS=never UV_SYSTEM_CERTS=1
# uv in a venv of its own (the base has no pip: ensurepip brings one for this stage only).
RUN --mount=type=secret,id=ca,target=/run/secrets/ca.pem \
    if [ -s /run/secrets/ca.pem ]; then export PIP_CERT=/run/secrets/ca.pem; fi \
    && python3 -m venv /opt/uv \
    && /opt/uv/bin/pip install --no-cache-dir uv==0.13.10
WORKDIR /src
COPY pyproject.toml uv.lock* ./
# The lock's exact versions, else [project].dependencies (listed, never dynamic), into the
# base's venv, as the sandbox's environments are built (models/trainers/environment.py): the
# team's pandas and pyarrow replace the base's when it declares them (the runner reads parquet
# with either), and dagster-pipes stays at the platform's version, in the same install so a
# team's other pin of it fails the build, named by uv.
RUN --mount=type=secret,id=ca,target=/run/secrets/ca.pem \
    if [ -s /run/secrets/ca.pem ]; then export SSL_CERT_FILE=/run/secrets/ca.pem; fi \
    && if [ -f uv.lock ]; then \
        /opt/uv/bin/uv export --frozen --no-emit-project --no-hashes \
            --format requirements-txt > /tmp/requirements.txt; \
    else \
        /opt/mlplat/venv/bin/python -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; assert "dependencies" not in p.get("dynamic", []), "dependencies must be listed, not dynamic"; print("\n".join(p.get("dependencies", [])))' > /tmp/requirements.txt; \
    fi \
    && /opt/uv/bin/uv pip install --python /opt/mlplat/venv/bin/python --only-binary :all: \
        -r /tmp/requirements.txt "$(grep '^dagster-pipes==' /opt/mlplat/requirements.txt)"
USER 10001:10001

# --- runtime: the base with the environment and the team's source, read-only ----------------
FROM ${BASE}
COPY --from=build /opt/mlplat/venv /opt/mlplat/venv
COPY . /opt/mlplat/code
USER 10001:10001
