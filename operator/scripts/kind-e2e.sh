#!/usr/bin/env bash
# The simulated cluster's check on a real one: build the images, load them into a kind cluster,
# install the operator with Helm, apply the minimal sample, wait for Ready and run the end-to-end
# suite through the ingress. Needs docker (or podman), kind, kubectl, helm and cargo.
# NOT RUN IN CI: the development machines have no container engine and no cluster.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CLUSTER="${KIND_CLUSTER:-helpdesk}"
VERSION="${VERSION:-0.1.0}"
REGISTRY=ghcr.io/helpdesk

kind get clusters | grep -qx "$CLUSTER" || kind create cluster --name "$CLUSTER"
kubectl apply -f https://raw.githubusercontent.com/kubernetes/ingress-nginx/main/deploy/static/provider/kind/deploy.yaml
kubectl -n ingress-nginx wait --for=condition=Available deploy/ingress-nginx-controller --timeout=300s

for svc in user ticket notification audit admin; do
  docker build --build-arg SERVICE="$svc" -t "$REGISTRY/$svc-service:$VERSION" "$ROOT"
  kind load docker-image --name "$CLUSTER" "$REGISTRY/$svc-service:$VERSION"
done
docker build -f "$ROOT/operator/Dockerfile" -t "$REGISTRY/helpdesk-operator:$VERSION" "$ROOT"
kind load docker-image --name "$CLUSTER" "$REGISTRY/helpdesk-operator:$VERSION"

helm upgrade --install helpdesk-operator "$ROOT/charts/helpdesk-operator" \
  --namespace helpdesk-system --create-namespace --set image.tag="$VERSION" --wait
kubectl create namespace support --dry-run=client -o yaml | kubectl apply -f -
sed "s/version: .*/version: \"$VERSION\"/" "$ROOT/operator/samples/minimal.yaml" | kubectl apply -f -
kubectl -n support wait hdp/helpdesk --for=jsonpath='{.status.phase}'=Ready --timeout=600s
kubectl -n support get hdp

# The ingress answers for helpdesk.example.com on the kind node's port 80.
kubectl -n ingress-nginx port-forward svc/ingress-nginx-controller 18080:80 >/dev/null &
trap 'kill $!' EXIT
sleep 2
E2E_BASE_URL=http://helpdesk.example.com:18080 E2E_RESOLVE=helpdesk.example.com=127.0.0.1:18080 \
E2E_ADMIN_EMAIL="$(kubectl -n support get secret helpdesk-admin -o jsonpath='{.data.email}' | base64 -d)" \
E2E_ADMIN_PASSWORD="$(kubectl -n support get secret helpdesk-admin -o jsonpath='{.data.password}' | base64 -d)" \
  cargo run -p helpdesk-e2e --example walk
