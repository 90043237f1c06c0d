#!/usr/bin/env bash
# A Docker engine on the default socket, as a Docker host has it: Debian's docker.io installed
# when missing (as root), dockerd started by hand where no init system does it, and left running
# so that a user's `docker` and `docker compose` afterwards find the images.
set -euo pipefail
SOCKET=${DOCKER_SOCKET:-/var/run/docker.sock}
answers() { timeout 20 docker -H "unix://$SOCKET" info >/dev/null 2>&1; }
answers && { echo "docker engine: answering on $SOCKET"; exit 0; }
if ! command -v dockerd >/dev/null; then
  [ "$(id -u)" = 0 ] || { echo "no Docker engine, and installing docker.io needs root"; exit 1; }
  echo "installing Debian's docker.io"
  t0=$SECONDS
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io >/dev/null
  echo "installed in $((SECONDS - t0)) s"
fi
[ "$(id -u)" = 0 ] || { echo "dockerd must be started as root (no engine on $SOCKET)"; exit 1; }
mkdir -p /var/lib/docker /var/run/docker
log=/var/log/millrace-dockerd.log
echo "starting dockerd on $SOCKET (log: $log)"
nohup setsid dockerd --data-root /var/lib/docker --exec-root /var/run/docker \
  -H "unix://$SOCKET" --storage-driver overlay2 >"$log" 2>&1 </dev/null &
for _ in $(seq 60); do answers && { echo "docker engine: up"; exit 0; }; sleep 1; done
echo "dockerd did not answer within 60 s:"; tail -20 "$log"; exit 1
