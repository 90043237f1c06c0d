#!/usr/bin/env bash
# Docker Compose v2 as the Docker CLI's plugin, built from the Go module proxy where the
# client has none (`docker compose` unknown). `go install` refuses compose's module for its
# exclude directives, so it is built from a module of our own that requires it. Cached: the
# plugin is built once per version.
set -euo pipefail
VERSION=${COMPOSE_VERSION:-v2.40.3}
PLUGINS=${DOCKER_CLI_PLUGINS:-/usr/local/lib/docker/cli-plugins}
if docker compose version 2>/dev/null | grep -q "$VERSION"; then
  docker compose version; exit 0
fi
command -v go >/dev/null || { echo "Go is needed to build Docker Compose $VERSION"; exit 1; }
work=$(cd "$(dirname "$0")/../.." && pwd)/.cache/compose-$VERSION
mkdir -p "$work" "$PLUGINS"
cd "$work"
[ -f go.mod ] || go mod init millrace.local/compose-plugin >/dev/null 2>&1
echo "building Docker Compose $VERSION from the Go module proxy (a few minutes, once)"
t0=$SECONDS
go get "github.com/docker/compose/v2/cmd@$VERSION"
go build -trimpath -ldflags "-s -w -X github.com/docker/compose/v2/internal.Version=$VERSION" \
  -o docker-compose github.com/docker/compose/v2/cmd
install -m 0755 docker-compose "$PLUGINS/docker-compose"
echo "built in $((SECONDS - t0)) s: $PLUGINS/docker-compose"
docker compose version
