#!/usr/bin/env bash
# `make k8s-e2e`: the platform on the real cluster KUBECONFIG points at (kind or minikube).
# Installs the services a run needs (Postgres, Redis, MinIO for the lake and MLflow artefacts),
# the tenant resources (`mlplat k8s render`), the official Dagster chart and each code
# location's user-deployments release; runs ridehail's pipeline; checks `kubectl auth can-i`
# both ways and that the ResourceQuota refuses what exceeds it; tears everything down.
# Where no cluster answers it says so and exits 0 (a skip, with the reason).
set -euo pipefail
cd "$(dirname "$0")/.."

skip() { echo "SKIP make k8s-e2e: $*"; exit 0; }
fail() { echo "FAIL make k8s-e2e: $*" >&2; exit 1; }

KUBECTL=${KUBECTL:-kubectl}
HELM=${HELM:-helm}
IMAGE=${IMAGE:-registry.mlplat.example/mlplat:0.1.0}
MLPLAT=.venv/bin/mlplat
CHART_VERSION=$(.venv/bin/python -c 'from importlib.metadata import version; print(version("dagster"))')
SERVICES_NS=mlplat-e2e-services

command -v "$KUBECTL" >/dev/null || skip "kubectl is not installed"
[ -n "${KUBECONFIG:-}" ] || [ -f "$HOME/.kube/config" ] \
  || skip "no KUBECONFIG: point it at a kind or minikube cluster"
"$KUBECTL" version --request-timeout=5s >/dev/null 2>&1 \
  || skip "no Kubernetes API answers for context '$("$KUBECTL" config current-context 2>/dev/null || echo none)'"
[ -x "$HELM" ] || command -v "$HELM" >/dev/null || fail "helm not found (make install puts it in .tools/bin)"

OUT=$(mktemp -d)
teardown() {
  echo "--- tearing down"
  for release in $("$HELM" list -A -q 2>/dev/null | grep -E '^(dagster|location-)' || true); do
    ns=$("$HELM" list -A -f "^${release}\$" -o json | .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)[0]["namespace"])')
    "$HELM" uninstall "$release" -n "$ns" --wait >/dev/null || true
  done
  "$KUBECTL" delete -R -f "$OUT/tenants" --ignore-not-found --wait=false >/dev/null 2>&1 || true
  "$KUBECTL" delete -R -f "$OUT/platform" --ignore-not-found --wait=false >/dev/null 2>&1 || true
  "$KUBECTL" delete namespace "$SERVICES_NS" --ignore-not-found --wait=false >/dev/null || true
  rm -rf "$OUT"
}
trap teardown EXIT

echo "--- the image must be on the cluster's nodes"
if "$KUBECTL" config current-context | grep -q '^kind-'; then
  command -v kind >/dev/null || fail "kind not found to load $IMAGE"
  kind load docker-image "$IMAGE" --name "$("$KUBECTL" config current-context | sed 's/^kind-//')"
elif "$KUBECTL" config current-context | grep -q minikube; then
  minikube image load "$IMAGE"
fi

echo "--- services a run needs, in $SERVICES_NS"
"$KUBECTL" create namespace "$SERVICES_NS" --dry-run=client -o yaml | "$KUBECTL" apply -f -
"$KUBECTL" -n "$SERVICES_NS" apply -f deploy/e2e/services.yaml
"$KUBECTL" -n "$SERVICES_NS" rollout status deploy/postgres deploy/redis deploy/minio --timeout=300s
"$KUBECTL" -n "$SERVICES_NS" wait --for=condition=complete job/create-databases --timeout=300s

echo "--- render with the cluster's service addresses"
SERVICE_CIDR=${SERVICE_CIDR:-10.96.0.0/12}
sed -e "s#host: postgres.mlplat.internal#host: postgres.$SERVICES_NS.svc#" \
    -e "s#cidr: [0-9./]*, port: \(5432\|6379\)#cidr: $SERVICE_CIDR, port: \1#" \
    -e "s#s3: {cidr: [0-9./]*, port: 443}#s3: {cidr: $SERVICE_CIDR, port: 9000}#" \
    -e "s#kubernetes_api: {cidr: [0-9./]*#kubernetes_api: {cidr: ${API_CIDR:-0.0.0.0/0}#" \
    -e "s#repository: registry.mlplat.example/mlplat#repository: ${IMAGE%:*}#" \
    -e "s#tag: \"0.1.0\"#tag: \"${IMAGE##*:}\"#" \
    platform_assets/k8s/platform.yaml > "$OUT/platform.yaml"
export MLPLAT_PLATFORM="$OUT/platform.yaml"
"$MLPLAT" k8s render --out "$OUT/rendered"
"$KUBECTL" apply -f "$OUT/rendered/platform/namespace-mlplat.yaml"
"$KUBECTL" apply -R -f "$OUT/rendered/platform"
for tenant in "$OUT"/rendered/tenants/*; do
  "$KUBECTL" apply -f "$tenant"/namespace-*.yaml
  "$KUBECTL" apply -f "$tenant"
done

echo "--- secrets, by the names the tenant chart declares (values for this test cluster)"
PG="postgresql://postgres:e2e@postgres.$SERVICES_NS.svc:5432"
for ns in mlplat $(ls "$OUT/rendered/tenants" | sed 's/^/tenant-/'); do
  "$KUBECTL" -n "$ns" create secret generic dagster-postgresql-secret \
    --from-literal=postgresql-password=e2e --dry-run=client -o yaml | "$KUBECTL" apply -f -
done
for tenant in platform $(ls "$OUT/rendered/tenants"); do
  ns=$([ "$tenant" = platform ] && echo mlplat || echo "tenant-$tenant")
  "$KUBECTL" -n "$ns" create secret generic "$tenant-services" \
    --from-literal=MLPLAT_LAKE_URI="s3://lake/$tenant" \
    --from-literal=MLPLAT_FEAST_REGISTRY_URL="$PG/feast" \
    --from-literal=MLPLAT_REDIS="redis.$SERVICES_NS.svc:6379" \
    --from-literal=MLFLOW_TRACKING_URI="$PG/mlflow" \
    --from-literal=MLPLAT_MLFLOW_ARTIFACTS="s3://mlflow/$tenant" \
    --from-literal=MLPLAT_DB_URL="$PG/platform" \
    --from-literal=AWS_ACCESS_KEY_ID=e2e --from-literal=AWS_SECRET_ACCESS_KEY=e2e-secret \
    --from-literal=AWS_ENDPOINT_URL="http://minio.$SERVICES_NS.svc:9000" \
    --dry-run=client -o yaml | "$KUBECTL" apply -f -
done

echo "--- the official Dagster chart $CHART_VERSION and one user-deployments release per location"
"$HELM" repo add dagster https://dagster-io.github.io/helm --force-update >/dev/null
"$HELM" upgrade --install dagster dagster/dagster --version "$CHART_VERSION" -n mlplat \
  -f "$OUT/rendered/helm/dagster.values.yaml" \
  --set postgresql.postgresqlHost="postgres.$SERVICES_NS.svc" \
  --set-json 'postgresql.postgresqlParams={}' --wait --timeout 10m
for values in "$OUT"/rendered/helm/user-deployments/*.yaml; do
  location=$(basename "$values" .yaml)
  ns=$([ "$location" = platform ] && echo mlplat || echo "tenant-${location//_/-}")
  "$HELM" upgrade --install "location-${location//_/-}" dagster/dagster-user-deployments \
    --version "$CHART_VERSION" -n "$ns" -f "$values" --wait --timeout 10m
done

echo "--- kubectl auth can-i, both ways"
as=system:serviceaccount:tenant-ridehail:ridehail-runner
[ "$("$KUBECTL" auth can-i create jobs --as="$as" -n tenant-ridehail)" = yes ] \
  || fail "ridehail-runner cannot create Jobs in its own namespace"
[ "$("$KUBECTL" auth can-i get pods/log --as="$as" -n tenant-ridehail)" = yes ] \
  || fail "ridehail-runner cannot read its pods' logs"
# A model step with `trainer:` creates its trainer pod (Gatekeeper holds it to the template).
[ "$("$KUBECTL" auth can-i create pods --as="$as" -n tenant-ridehail)" = yes ] \
  || fail "ridehail-runner cannot create trainer pods in its own namespace"
for denied in "create jobs -n tenant-payments" "get secrets -n tenant-ridehail" \
              "create pods -n tenant-payments" "create jobs -n mlplat"; do
  # shellcheck disable=SC2086
  if [ "$("$KUBECTL" auth can-i $denied --as="$as" || true)" != no ]; then
    fail "ridehail-runner may $denied"
  fi
done
# The account the team's own training code runs as may do nothing at all.
trainer=system:serviceaccount:tenant-ridehail:ridehail-trainer
for denied in "create pods -n tenant-ridehail" "get pods -n tenant-ridehail" \
              "get secrets -n tenant-ridehail" "list configmaps -n tenant-ridehail"; do
  # shellcheck disable=SC2086
  if [ "$("$KUBECTL" auth can-i $denied --as="$trainer" || true)" != no ]; then
    fail "ridehail-trainer may $denied"
  fi
done

echo "--- the ResourceQuota refuses what exceeds it"
if "$KUBECTL" -n tenant-ridehail apply -f deploy/e2e/over-quota-pod.yaml 2>"$OUT/quota.err"; then
  fail "a pod asking for more than tenant-ridehail's quota was admitted"
fi
grep -q "exceeded quota" "$OUT/quota.err" || fail "refused, but not by the quota: $(cat "$OUT/quota.err")"

echo "--- run ridehail's pipeline"
webserver=$("$KUBECTL" -n mlplat get pods -l component=dagster-webserver -o name | head -1)
"$KUBECTL" -n mlplat exec "$webserver" -- dagster job launch -w /dagster-workspace/workspace.yaml \
  -l ridehail -j ridehail_pipeline
for _ in $(seq 1 120); do
  status=$("$KUBECTL" -n tenant-ridehail get jobs -l app.kubernetes.io/component=run_worker \
    -o jsonpath='{.items[0].status.succeeded}{.items[0].status.failed}' 2>/dev/null || true)
  case "$status" in
    1) echo "ridehail_pipeline succeeded"; break ;;
    *1*) "$KUBECTL" -n tenant-ridehail logs -l app.kubernetes.io/component=run_worker --tail=100
         fail "ridehail_pipeline's run worker failed" ;;
  esac
  sleep 10
done
[ "${status:-}" = 1 ] || fail "ridehail_pipeline did not finish in 20 minutes"
[ "$("$KUBECTL" -n tenant-ridehail get jobs -l app.kubernetes.io/component=step_worker -o name | wc -l)" -ge 7 ] \
  || fail "fewer step Jobs in tenant-ridehail than steps"
echo "PASS make k8s-e2e"
