#!/usr/bin/env bash
# Regenerates the CRD from the Rust types into every place that ships it.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
cargo run --quiet -p helpdesk-operator -- crd --write-to crds --write-to charts/helpdesk-operator/crds
cp crds/helpdeskplatforms.helpdesk.dev.yaml openshift/bundle/manifests/helpdeskplatforms.helpdesk.dev.crd.yaml
echo "CRD written to crds/, charts/helpdesk-operator/crds/, openshift/bundle/manifests/"
