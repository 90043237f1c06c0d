#!/usr/bin/env bash
# The chart's validation tools, built from the Go module proxy into .cache/tools/bin once per
# version (no release downloads are reachable here): Helm itself, and helm-unittest, run as a
# program of its own (it renders with Helm's library, so it needs no plugin install).
set -euo pipefail
HELM_VERSION=${HELM_VERSION:-v4.3.2}
UNITTEST_VERSION=${HELM_UNITTEST_VERSION:-v1.1.2}
root=$(cd "$(dirname "$0")/../.." && pwd)
bin=$root/.cache/tools/bin
mkdir -p "$bin"
command -v go >/dev/null || { echo "Go is needed to build Helm $HELM_VERSION and helm-unittest"; exit 1; }

stamp() { cat "$bin/.$1" 2>/dev/null || true; }

if [ "$(stamp helm)" != "$HELM_VERSION" ] || [ ! -x "$bin/helm" ]; then
  echo "building Helm $HELM_VERSION from the Go module proxy (a few minutes, once)"
  t0=$SECONDS
  GOBIN=$bin go install -trimpath \
    -ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=$HELM_VERSION" \
    "helm.sh/helm/v4/cmd/helm@$HELM_VERSION"
  echo "$HELM_VERSION" >"$bin/.helm"
  echo "built in $((SECONDS - t0)) s"
fi

if [ "$(stamp helm-unittest)" != "$UNITTEST_VERSION" ] || [ ! -x "$bin/helm-unittest" ]; then
  echo "building helm-unittest $UNITTEST_VERSION from the Go module proxy (a few minutes, once)"
  t0=$SECONDS
  # Its go.mod replaces yaml-jsonpath with the project's fork, which `go install pkg@version`
  # refuses: built from a module of our own that repeats the replacement.
  work=$root/.cache/tools/helm-unittest-$UNITTEST_VERSION
  mkdir -p "$work"
  cd "$work"
  [ -f go.mod ] || go mod init millrace.local/helm-unittest >/dev/null 2>&1
  go mod edit -replace github.com/vmware-labs/yaml-jsonpath@v0.3.2=github.com/helm-unittest/yaml-jsonpath@v0.4.0
  go get "github.com/helm-unittest/helm-unittest/cmd/helm-unittest@$UNITTEST_VERSION"
  go build -trimpath -ldflags "-s -w" -o "$bin/helm-unittest" \
    github.com/helm-unittest/helm-unittest/cmd/helm-unittest
  echo "$UNITTEST_VERSION" >"$bin/.helm-unittest"
  echo "built in $((SECONDS - t0)) s"
fi
"$bin/helm" version --short
