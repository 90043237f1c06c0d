#!/usr/bin/env bash
# `make images`: every image the compose file runs, built on this Docker engine.
# Where a registry answers, the official bases are used (python:3.11-slim; apache/kafka and
# redis are the compose file's defaults and need no build). Where none does, a base is made
# from Debian packages (debootstrap + docker import) and the stand-ins are built on it:
# millrace-python, millrace-kafka (Apache Kafka's jars from Maven Central), millrace-redis,
# millrace-postgres and millrace-prometheus (Debian's packages; Grafana has none, so it has no stand-in).
# The chosen names are written to .cache/images/images.env for compose and the tests.
# Every step is cached: an image already built from unchanged inputs is not built again.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
WORK=.cache/images
SUITE=bookworm
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
BASE=millrace-debian:$SUITE
mkdir -p "$WORK"

step() { printf '\n== %s\n' "$*"; }
have_image() { docker image inspect "$1" >/dev/null 2>&1; }
timed() { local t0=$SECONDS; "$@"; echo "   ($((SECONDS - t0)) s)"; }
# docker build -q, without the client's notice that BuildKit (buildx, not packaged here) is not
# used: the legacy builder is what this engine has.
quiet_build() {
  docker build -q "$@" 2> >(grep -v -e 'legacy builder is deprecated' -e 'buildx' -e '^$' >&2) >/dev/null
}

registry_answers() {
  have_image python:3.11-slim && return 0
  timeout 30 docker pull -q python:3.11-slim >/dev/null 2>&1
}

make_base() {
  if have_image "$BASE"; then echo "   $BASE: present"; return; fi
  command -v debootstrap >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >/dev/null; }
  rm -rf "$WORK/rootfs"
  debootstrap --variant=minbase "$SUITE" "$WORK/rootfs" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 \
    || { tail -20 "$WORK/debootstrap.log"; exit 1; }
  # The same sources apt uses here; no recommends, no docs, as slim images have it.
  printf 'APT::Install-Recommends "false";\n' >"$WORK/rootfs/etc/apt/apt.conf.d/90millrace"
  tar -C "$WORK/rootfs" -c . | docker import -c 'CMD ["/bin/bash"]' - "$BASE" >/dev/null
  rm -rf "$WORK/rootfs"
}

# A build context assembled under .cache (docker's cache keys on content, so an unchanged
# context rebuilds nothing).
context() {
  local name=$1; shift
  local dir="$WORK/context-$name"
  rm -rf "$dir"; mkdir -p "$dir"
  cp -a "deploy/docker/$name/." "$dir/"
  for extra in "$@"; do cp -a "$extra" "$dir/"; done
  echo "$dir"
}

build() {
  local tag=$1 dir=$2; shift 2
  quiet_build --build-arg "BASE_IMAGE=$BASE" -t "$tag" "$@" "$dir"
  echo "   $tag"
}

if registry_answers; then
  step "a registry answers: official bases"
  PYTHON_IMAGE=python:3.11-slim
  KAFKA_IMAGE=${KAFKA_IMAGE:-apache/kafka:4.1.0}
  REDIS_IMAGE=${REDIS_IMAGE:-redis:7.4}
  POSTGRES_IMAGE=${POSTGRES_IMAGE:-postgres:16}
  PROMETHEUS_IMAGE=${PROMETHEUS_IMAGE:-prom/prometheus:v2.53.0}
else
  step "no registry: a Debian $SUITE base from $MIRROR"
  timed make_base
  CA=$("$PY" -m pip config get global.cert 2>/dev/null || echo /etc/ssl/certs/ca-certificates.crt)
  step "stand-ins on $BASE"
  PYTHON_IMAGE=millrace-python:3.11-slim
  timed build "$PYTHON_IMAGE" "$(context python "$CA")"
  jars=$("$PY" -c 'from millrace_stack.brokers import ensure_kafka_jars; print(ensure_kafka_jars())')
  dir=$(context kafka infra/millrace_stack/kafka-log4j2.properties)
  cp -a "$jars" "$dir/libs"
  KAFKA_IMAGE=millrace-kafka:$(basename "$(ls "$jars"/kafka_2.13-*.jar)" .jar | cut -d- -f2)
  timed build "$KAFKA_IMAGE" "$dir"
  REDIS_IMAGE=millrace-redis:7
  timed build "$REDIS_IMAGE" "$(context redis)"
  POSTGRES_IMAGE=millrace-postgres:15
  timed build "$POSTGRES_IMAGE" "$(context postgres)"
  # Grafana is not packaged by Debian: the observability profile's grafana has no stand-in.
  PROMETHEUS_IMAGE=millrace-prometheus:debian
  timed build "$PROMETHEUS_IMAGE" "$(context prometheus)"
fi

# The compiled parts (Rust: the hashed learners' encoding, the trainer's join): the image's
# Debian has no Rust toolchain, so their wheels are built here, once per version of the sources.
step "the compiled parts: wheels built on this machine"
crates="shared/hashing services/trainer/join_core"
sources=$(for c in $crates; do cat "$c"/Cargo.toml "$c"/Cargo.lock "$c"/*.pyi "$c"/src/*.rs; done | sha256sum | cut -c1-16)
if [ -f "dist/wheels/.sources-$sources" ]; then echo "   present"; else
  rm -rf dist/wheels
  for c in $crates; do timed "$PY" -m pip wheel -q --no-deps -w dist/wheels "./$c"; done
  touch "dist/wheels/.sources-$sources"
fi

step "millrace:local on $PYTHON_IMAGE"
timed quiet_build --build-arg "PYTHON_IMAGE=$PYTHON_IMAGE" -t millrace:local .
# The Helm chart runs millrace:<its appVersion>, the project's version: push this tag.
VERSION=$("$PY" -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
docker tag millrace:local "millrace:$VERSION"
cat >"$WORK/images.env" <<ENV
PYTHON_IMAGE=$PYTHON_IMAGE
KAFKA_IMAGE=$KAFKA_IMAGE
REDIS_IMAGE=$REDIS_IMAGE
POSTGRES_IMAGE=$POSTGRES_IMAGE
PROMETHEUS_IMAGE=$PROMETHEUS_IMAGE
ENV
# Every run's time, for the record (`make compose-test`: the first and the latest).
echo "$SECONDS" >>"$WORK/build-seconds"
step "images in $SECONDS s (for compose: cat $WORK/images.env >> .env)"
cat "$WORK/images.env"
