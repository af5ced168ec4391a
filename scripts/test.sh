#!/usr/bin/env bash
# Runs every check and test of berth: installs the outside tools (real clients, the OCI conformance
# suite, staticcheck), then gofmt, go vet, staticcheck and `go test -race` over every package, which
# includes the conformance suite, the real-client round trips and the crash test (package e2e, whose
# berth binary is then built with -race too).
# Works on a fresh Debian machine with Go; run it as root (it installs Debian packages).
#
# Usage: scripts/test.sh [GO TEST FLAGS AND PACKAGES]   (default: ./...)
#   e.g. scripts/test.sh -run 'TestCrash' ./e2e/
#
# It cannot go green on work that did not run: it refuses -short and BERTH_E2E_SKIP_MISSING, lists
# every skipped test at the end and fails on any skip not in ALLOWED_SKIPS below, and fails when a
# package ran no test (so a -run pattern that matches nothing in a package it names fails). Timing
# comparisons are not tests here: they live in bench/ (go run ./bench).
set -euo pipefail
cd "$(dirname "$0")/.."

# Tests that may skip. A skip that depends on the machine (a kernel feature, a device) may be listed;
# a skip of unfinished work, or of a tool that scripts/install-tools.sh installs, may not. One entry
# a line, with a comment right above it saying why it may skip:
#   # why this test may skip here
#   IMPORT PATH | TEST (Go regexp, the whole name: TestX or TestX/case) | REASON (Go regexp, part of the skip message)
# On a machine that scripts/install-tools.sh has set up as root (CI), no test skips.
ALLOWED_SKIPS='
# A full disk is made with a small tmpfs, which only root (with CAP_SYS_ADMIN) can mount.
github.com/berth/berth/e2e | TestDiskFull(/.*)? | cannot mount a tmpfs
# The free-space floor of pull-through fills is shown on a small tmpfs, mounted as root.
github.com/berth/berth/e2e | TestProxyFillFreeSpaceFloor(/.*)? | tmpfs
'

refuse() {
  echo "scripts/test.sh: $*" >&2
  exit 2
}
if [ -n "${BERTH_E2E_SKIP_MISSING+set}" ]; then
  refuse "BERTH_E2E_SKIP_MISSING is set: a test whose client is missing must fail here, not skip. Unset it (scripts/install-tools.sh installs every client)."
fi
for a in ${GOFLAGS:-} "$@"; do
  case "$a" in
    -short=false | --short=false | -test.short=false | --test.short=false) ;;
    -short | --short | -short=* | --short=* | -test.short | --test.short | -test.short=* | --test.short=*)
      refuse "-short (in GOFLAGS or the arguments) skips work: this script runs everything. Use go test -short yourself for a quick look." ;;
  esac
done

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
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
go build -o "$tmp/testreport" ./scripts/testreport
if [ $# -eq 0 ]; then set -- ./...; fi
# testreport prints what go test prints (each failed test's whole output) as the run goes, then
# the counts, every skip and the verdict. pipefail: either one failing fails the script.
go test -json -count=1 -race -timeout 30m "$@" | "$tmp/testreport" -allow "$ALLOWED_SKIPS"
