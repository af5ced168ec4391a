#!/usr/bin/env bash
# Builds berth's own OCI image — linux/amd64 and linux/arm64 under one index — and pushes it to REF.
# Nothing comes from the internet: no base image. The one layer holds the static binary
# (CGO_ENABLED=0) at /usr/local/bin/berth, /etc/passwd and /etc/group with the non-root user berth
# (65532:65532), /data owned by it, and this machine's CA certificates (berth talks HTTPS to the
# upstream registries it caches; Debian's ca-certificates package provides them). The image runs
# `berth serve --addr :5000 --data /data` as 65532:65532.
#
# Reproducible: every time in it is SOURCE_DATE_EPOCH (default: the commit's time), Go builds
# with -trimpath, and the layer is written in a fixed order with fixed owners, so two builds of one
# commit give one digest.
#
# Usage: scripts/image.sh [--insecure] REF            e.g. scripts/image.sh berth.example.com/berth/berth:v1.2.0
#   --insecure   plain HTTP to a registry that is not on loopback (crane uses plain HTTP for
#                localhost and 127.0.0.0/8 by itself)
# Credentials: those of the Docker config (crane auth login HOST -u USER -p ...; a robot with push).
# Environment: RELEASE (default: git describe --tags --always --dirty), SOURCE_DATE_EPOCH,
#   PLATFORMS (default "linux/amd64 linux/arm64"), CA_CERTS (default /etc/ssl/certs/ca-certificates.crt).
# Prints REF@sha256:... (the index) as its last line.
set -euo pipefail
cd "$(dirname "$0")/.."

insecure=()
if [ "${1:-}" = "--insecure" ]; then insecure=(--insecure); shift; fi
if [ $# -ne 1 ] || [[ "$1" == -* ]]; then
  echo "usage: scripts/image.sh [--insecure] REGISTRY/REPOSITORY:TAG" >&2
  exit 2
fi
ref=$1
PATH="$PWD/.tools/bin:$PATH"
command -v crane >/dev/null || { echo "image.sh: crane is not installed (scripts/install-tools.sh)" >&2; exit 1; }

commit=$(git rev-parse HEAD)
release=${RELEASE:-$(git describe --tags --always --dirty)}
epoch=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct HEAD)}
created=$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)
platforms=${PLATFORMS:-linux/amd64 linux/arm64}
ca=${CA_CERTS:-/etc/ssl/certs/ca-certificates.crt}

work=$(mktemp -d)
stage_pid=
cleanup() {
  if [ -n "$stage_pid" ]; then kill "$stage_pid" 2>/dev/null || true; wait "$stage_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# The images are put together in a registry of crane's own, in memory on loopback, so that REF
# receives only the finished index and its two images (crane mutate works on a pushed image).
crane registry serve --address 127.0.0.1:0 >"$work/stage.log" 2>&1 &
stage_pid=$!
for _ in $(seq 100); do
  port=$(sed -n 's/.*serving on port \([0-9]*\).*/\1/p' "$work/stage.log")
  [ -n "$port" ] && break
  sleep 0.1
done
[ -n "${port:-}" ] || { echo "image.sh: crane registry serve did not start:" >&2; cat "$work/stage.log" >&2; exit 1; }
stage=127.0.0.1:$port/berth

manifests=()
for platform in $platforms; do
  os=${platform%/*}; arch=${platform#*/}
  echo "image.sh: building berth $release for $platform" >&2
  CGO_ENABLED=0 GOOS=$os GOARCH=$arch go build -trimpath \
    -ldflags "-s -w -X github.com/berth/berth/internal/version.Release=$release -X github.com/berth/berth/internal/version.Commit=$commit" \
    -o "$work/$arch/berth" ./cmd/berth
  go run ./scripts/imagelayer -bin "$work/$arch/berth" -ca "$ca" -mtime "$epoch" -o "$work/$arch/layer.tar"
  crane append --oci-empty-base -f "$work/$arch/layer.tar" -t "$stage:$arch-layer" >/dev/null
  crane mutate "$stage:$arch-layer" -t "$stage:$arch" --set-platform "$platform" \
    --entrypoint /usr/local/bin/berth --cmd serve,--addr,:5000,--data,/data \
    --user 65532:65532 --workdir /data --exposed-ports 5000/tcp \
    --env PATH=/usr/local/bin --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    --label org.opencontainers.image.title=berth \
    --label org.opencontainers.image.description="a self-hosted OCI container registry" \
    --label org.opencontainers.image.source=https://github.com/berth/berth \
    --label org.opencontainers.image.version="$release" \
    --label org.opencontainers.image.revision="$commit" \
    --label org.opencontainers.image.created="$created" >/dev/null
  manifests+=(-m "$stage:$arch")
done
crane index append "${manifests[@]}" -t "$stage:index" >/dev/null
crane copy "${insecure[@]}" "$stage:index" "$ref" >&2
digest=$(crane digest "${insecure[@]}" "$ref")
repo=${ref%@*}
if [[ ${repo##*/} == *:* ]]; then repo=${repo%:*}; fi # the tag, not a registry's port
echo "$repo@$digest"
