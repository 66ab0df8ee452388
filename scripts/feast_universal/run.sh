#!/usr/bin/env bash
# Run Feast's universal offline-store tests (historical retrieval, materialization, persist)
# against AsofOfflineStore. Usage: scripts/feast_universal/run.sh FEAST_CHECKOUT [pytest args]
#   FEAST_CHECKOUT: a checkout of feast-dev/feast at our Feast version, outside this repo.
#   PYTHON: an interpreter with this project and Feast's test dependencies installed
#           (pytest, pytest-env, pytest-timeout, pytest-asyncio, minio, testcontainers).
set -euo pipefail
feast_sdk="$(cd "$1/sdk/python" && pwd)"
shift
cd "$feast_sdk"
# The store's repo configuration, imported from the project installed in $PYTHON.
export FULL_REPO_CONFIGS_MODULE=platform_assets.features.offline_store.repo_configuration
export FEAST_IS_LOCAL_TEST=True
export PYTHONPATH="$feast_sdk"
exec "${PYTHON:-python}" -m pytest -p no:cacheprovider \
  tests/integration/offline_store/test_universal_historical_retrieval.py \
  tests/integration/offline_store/test_universal_materialization.py \
  tests/integration/offline_store/test_persist.py \
  --integration -rs "$@"
