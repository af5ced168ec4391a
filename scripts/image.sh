#!/usr/bin/env bash
# Builds berth's own OCI image, for linux/amd64 and linux/arm64, and pushes it as one index to REF.
#
# No base image is pulled from anywhere: each platform's image is one layer on crane's empty OCI
# base, holding the static binary (CGO_ENABLED=0), a passwd/group with the non-root user berth
# (65532:65532), the data directory /data owned by it, and this machine's CA bundle (berth talks
# HTTPS to upstreams). The image runs `berth serve --addr :5000 --data /data` as 65532:65532.
#
# Reproducible: the layer tar has fixed owners, sorted names and every mtime at SOURCE_DATE_EPOCH
# (the commit's time unless set), the binary is built with -trimpath and without VCS stamping (the
# release and commit come in through -ldflags), and the config's created time is SOURCE_DATE_EPOCH,
# so two builds of one commit push one index digest (the CA bundle is this machine's: a machine with
# another bundle gets another digest).
#
# Usage: scripts/image.sh REF [--insecure]
#   REF         where to push, e.g. registry.example.com/berth/berth:v0.3.0
#   --insecure  plain HTTP (crane already uses it for localhost and 127.0.0.1)
# Needs: go, git, GNU tar, crane (scripts/install-tools.sh installs it into .tools/bin).
# Prints the pushed reference, REPO@sha256:..., on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.tools/bin:$PATH"

usage() { echo "usage: scripts/image.sh REF [--insecure]" >&2; exit 2; }
ref="" insecure=()
for a in "$@"; do
	case $a in
	--insecure) insecure=(--insecure) ;;
	-*) echo "image.sh: unknown flag $a" >&2; usage ;;
	*) [[ -z $ref ]] || usage; ref=$a ;;
	esac
done
[[ -n $ref ]] || usage
# The repository: REF without its tag or digest (a port's colon sits before the last slash).
repo=${ref%@*}
[[ $repo == */* && ${repo##*/} == *:* ]] && repo=${repo%:*}
[[ $repo == */* ]] && [[ $ref != "$repo" ]] || { echo "image.sh: REF needs a registry, a repository and a tag: $ref" >&2; exit 2; }
[[ $ref != *@* ]] || { echo "image.sh: REF must be a tag, not a digest: $ref" >&2; exit 2; }
for tool in go git tar crane; do
	command -v "$tool" >/dev/null || { echo "image.sh: $tool not found (scripts/install-tools.sh installs crane)" >&2; exit 1; }
done
tar --version | grep -q 'GNU tar' || { echo "image.sh: needs GNU tar (--sort, --mtime)" >&2; exit 1; }
certs=/etc/ssl/certs/ca-certificates.crt
[[ -r $certs ]] || { echo "image.sh: no CA bundle at $certs (apt-get install ca-certificates)" >&2; exit 1; }

release=$(git describe --tags --always --dirty)
commit=$(git rev-parse HEAD)
: "${SOURCE_DATE_EPOCH:=$(git log -1 --format=%ct HEAD)}"
export SOURCE_DATE_EPOCH
created=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)
source_url=${BERTH_SOURCE_URL:-https://github.com/berth/berth}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# layer ARCH: writes $work/ARCH.tar, the image's only layer.
layer() {
	local arch=$1 root=$work/$1/root
	mkdir -p "$root"/{usr/local/bin,etc/ssl/certs,data,tmp}
	CGO_ENABLED=0 GOOS=linux GOARCH=$arch go build -trimpath -buildvcs=false \
		-ldflags "-s -w -X github.com/berth/berth/internal/version.Release=$release -X github.com/berth/berth/internal/version.Commit=$commit" \
		-o "$root/usr/local/bin/berth" ./cmd/berth
	printf 'root:x:0:0:root:/root:/sbin/nologin\nberth:x:65532:65532:berth:/data:/sbin/nologin\n' >"$root/etc/passwd"
	printf 'root:x:0:\nberth:x:65532:\n' >"$root/etc/group"
	cp "$certs" "$root/etc/ssl/certs/ca-certificates.crt"
	# Modes set here, not left to the umask, so every machine writes the same tar.
	find "$root" -type d -exec chmod 0755 {} +
	chmod 0755 "$root/usr/local/bin/berth"
	chmod 0644 "$root/etc/passwd" "$root/etc/group" "$root/etc/ssl/certs/ca-certificates.crt"
	chmod 1777 "$root/tmp"
	chmod 0750 "$root/data"
	local common=(--format=gnu --sort=name --mtime="@$SOURCE_DATE_EPOCH" --numeric-owner -C "$root")
	tar --create --file "$work/$arch.tar" --owner=0 --group=0 "${common[@]}" etc tmp usr
	# /data belongs to berth: appended with its own owner (tar's --owner applies to a whole run).
	tar --append --file "$work/$arch.tar" --owner=65532 --group=65532 --no-recursion "${common[@]}" data
}

digests=()
for arch in amd64 arm64; do
	layer "$arch"
	# append can only push to a tag: a build tag of its own, so that REF never names a bare layer
	# (REF keeps its old image until the index replaces it). mutate pushes the finished image by
	# digest and prints REPO@sha256:...; the bare one (and its build tag) is then deleted.
	bare=$(crane "${insecure[@]}" append --oci-empty-base -f "$work/$arch.tar" -t "$repo:image-sh-build-$arch")
	image=$(crane "${insecure[@]}" mutate "$bare" --repo "$repo" \
		--set-platform "linux/$arch" \
		--entrypoint /usr/local/bin/berth \
		--cmd serve,--addr,:5000,--data,/data \
		--user 65532:65532 \
		--workdir /data \
		--exposed-ports 5000/tcp \
		--label org.opencontainers.image.source="$source_url" \
		--label org.opencontainers.image.version="$release" \
		--label org.opencontainers.image.revision="$commit" \
		--label org.opencontainers.image.created="$created" \
		--label org.opencontainers.image.title=berth)
	crane "${insecure[@]}" delete "$bare" ||
		echo "image.sh: could not delete the intermediate $bare (harmless: garbage collection removes it once untagged)" >&2
	digests+=("$image")
	echo "image.sh: linux/$arch $image" >&2
done
index=$(crane "${insecure[@]}" index append "${digests[@]/#/--manifest=}" -t "$ref")
echo "image.sh: $ref = $index ($release, commit $commit)" >&2
echo "$index"
