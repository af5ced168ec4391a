#!/usr/bin/env bash
# Installs every outside tool the tests and benchmarks use, into .tools/bin (Go tools) and the
# system (Debian packages). Idempotent: a tool already at the wanted version is not installed again.
# Usage: scripts/install-tools.sh [--bench]
#   --bench also installs what only bench/ runs: CNCF Distribution 2.8 (Debian) and wrk.
set -euo pipefail
cd "$(dirname "$0")/.."
export GOBIN="$PWD/.tools/bin"
mkdir -p "$GOBIN"

# haproxy: the load balancer in front of the replicas (e2e TestReplicas).
# postgresql-15: the PostgreSQL metadata store's tests start a server of their own
# (internal/enginetest), from /usr/lib/postgresql/15/bin.
# chromium: the browser the web console's test drives headless (e2e TestConsoleBrowser, chromedp).
# ca-certificates: scripts/image.sh copies its bundle into berth's image (e2e TestImage).
apt_pkgs=(skopeo haproxy postgresql-15 chromium ca-certificates systemd)
if [ "${1:-}" = "--bench" ]; then apt_pkgs+=(docker-registry wrk); fi
missing=()
for p in "${apt_pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# name|module@version ; a stamp file records the version installed.
tools=(
  "crane|github.com/google/go-containerregistry/cmd/crane@v0.22.1"
  "oras|oras.land/oras/cmd/oras@v1.3.6"
  "regctl|github.com/regclient/regclient/cmd/regctl@v0.11.7"
  "conformance|github.com/opencontainers/distribution-spec/conformance@v0.0.0-20260831232431-97274622c111"
  "staticcheck|honnef.co/go/tools/cmd/staticcheck@v0.8.2"
  # the S3-compatible server the s3 blob store is tested against (internal/enginetest), ~3 min
  "versitygw|github.com/versity/versitygw/cmd/versitygw@v1.8.0"
  # CNCF Distribution v3, what bench/ compares berth with; bench TestServersOnEngines starts it on
  # versitygw as the benchmark does (~4 min, built while the others build)
  "registry|github.com/distribution/distribution/v3/cmd/registry@v3.1.2"
  # Let's Encrypt's test CA and its DNS server: tls.acme's tests obtain certificates from them
  # (e2e/acme_test.go)
  "pebble|github.com/letsencrypt/pebble/v2/cmd/pebble@v2.10.3"
  "pebble-challtestsrv|github.com/letsencrypt/pebble/v2/cmd/pebble-challtestsrv@v2.10.3"
)
pids=()
for t in "${tools[@]}"; do
  name=${t%%|*}; mod=${t#*|}
  stamp="$GOBIN/.$name.version"
  if [ -x "$GOBIN/$name" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$mod" ]; then continue; fi
  ( go install "$mod" && echo "$mod" >"$stamp" ) &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
echo "tools ready in $GOBIN"
