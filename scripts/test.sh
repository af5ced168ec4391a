#!/usr/bin/env bash
# Runs every check and test of berth: installs the outside tools (real clients, the OCI conformance
# suite, staticcheck), then gofmt, go vet, staticcheck and `go test` over every package, which
# includes the conformance suite, the real-client round trips and the crash test (package e2e).
# Works on a fresh Debian machine with Go; run it as root (it installs Debian packages).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-tools.sh
export PATH="$PWD/.tools/bin:$PATH"

echo "== gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './.tools/*'))
if [ -n "$unformatted" ]; then
  echo "gofmt would change:"; echo "$unformatted"; exit 1
fi
echo "== go vet"
go vet ./...
echo "== staticcheck"
staticcheck ./...
echo "== go test"
go test -count=1 -race -timeout 30m ./...
# The race detector slows copying and hashing too much for the cache's timing comparison (50 cold
# pulls within 1.5x of one), so that test also runs without it.
go test -count=1 -run 'TestColdPullsCoalesce' ./internal/proxy/
