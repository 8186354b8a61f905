#!/usr/bin/env bash
# release.sh builds the starling command for release: static (no cgo),
# stripped, reproducible paths (-trimpath), the version stamped in, for
# each target, with a SHA256SUMS file beside the binaries.
#
#   scripts/release.sh                 version from git describe, all targets
#   VERSION=v0.2.0 scripts/release.sh
#   TARGETS="linux/amd64" OUT=/tmp/rel scripts/release.sh
#
# Targets are GOOS/GOARCH, with /7 after arm for ARMv7 (Raspberry Pi 2 and
# later on a 32-bit system). Binaries are named starling-VERSION-OS-ARCH.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
TARGETS=${TARGETS:-"linux/amd64 linux/arm64 linux/arm/7"}
OUT=${OUT:-dist}

mkdir -p "$OUT"
names=()
for target in $TARGETS; do
	IFS=/ read -r goos goarch goarm <<<"$target"
	name="starling-$VERSION-$goos-$goarch${goarm:+v$goarm}"
	echo "release.sh: building $name" >&2
	CGO_ENABLED=0 GOOS=$goos GOARCH=$goarch GOARM=$goarm \
		go build -trimpath -ldflags "-s -w -X main.version=$VERSION" -o "$OUT/$name" ./cmd/starling
	names+=("$name")
done
(cd "$OUT" && sha256sum "${names[@]}" >SHA256SUMS)
echo "release.sh: wrote ${names[*]} and SHA256SUMS to $OUT" >&2
