#!/usr/bin/env bash
# Security scan of the deployment with checkov: every manifest under k8s/, everything each
# kustomization builds (what `kubectl apply -k` would send), and the Dockerfile.
# Usage: scripts/checkov-scan.sh [more checkov arguments, e.g. -o json or -f another.yaml]
# Needs `make install scanners` (kubectl in .venv, checkov in .venv-checkov); nothing is
# downloaded while scanning. Skips are per resource, each with its reason where it applies:
# `checkov.io/skipN: CHECK=reason` annotations in manifests, `# checkov:skip=CHECK:reason` in the
# Dockerfile.
set -euo pipefail
cd "$(dirname "$0")/.."

kubectl=.venv/bin/kubectl
checkov=.venv-checkov/bin/checkov
for tool in "$kubectl" "$checkov"; do
  [ -x "$tool" ] || { echo "$tool is missing: run make install scanners" >&2; exit 2; }
done

built=$(mktemp -d)
trap 'rm -rf "$built"' EXIT
targets=(-f Dockerfile)
for kustomization in k8s/base k8s/overlays/*/; do
  name=$(basename "$kustomization")
  "$kubectl" kustomize "$kustomization" > "$built/$name.built.yaml"
  targets+=(-f "$built/$name.built.yaml")
done
while IFS= read -r manifest; do
  targets+=(-f "$manifest")
done < <(find k8s -name '*.yaml' ! -name kustomization.yaml | sort)

# Failures only on a terminal; every result (passed and skipped too) when an -o is asked for.
quiet=(--quiet)
for arg in "$@"; do
  case "$arg" in -o|--output|-o*|--output=*) quiet=() ;; esac
done
# No calls home: no policy download, no update check.
export CKV_SKIP_PACKAGE_UPDATE_CHECK=true BC_SKIP_MAPPING=TRUE
exec "$checkov" --framework kubernetes dockerfile --skip-download --compact "${quiet[@]}" \
  "${targets[@]}" "$@"
