#!/usr/bin/env bash
# Build containerd itself (cmd/containerd) for the daemon path.
#
#   oracle/build-daemon.sh VERSION|default [OUTDIR]
#   oracle/build-daemon.sh --tree PATH KEY [OUTDIR]
#
# VERSION is a containerd release or module pseudo-version ("default": the versions.txt line marked
# default): its module source comes from the Go
# module proxy (`go mod download`) and is built with its own go.mod/go.sum. --tree builds a local
# checkout PATH (absolute) under the name KEY (harness/srctree.py), with the tree's own go.mod
# (and vendor/ when present). OUTDIR defaults to <repo>/.cache/containerd/<VERSION|KEY>.
# Prints the binary path on stdout; logs go to stderr.
# Static (CGO_ENABLED=0) with the storage drivers that need cgo left out (no_btrfs, no_devmapper,
# no_zfs): the erofs and overlayfs snapshotters are pure Go. The build is skipped when a hash of
# its inputs (version or tree key, Go version, this script) matches OUTDIR/.inputs.sha256.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
log() { printf '[oracle/build-daemon] %s\n' "$*" >&2; }
die() { printf '[oracle/build-daemon] error: %s\n' "$*" >&2; exit 2; }
command -v go >/dev/null || die "go is not installed"
export GOTOOLCHAIN=local CGO_ENABLED=0
tags="no_btrfs no_devmapper no_zfs"
module=github.com/containerd/containerd/v2

if [ "${1:-}" = --tree ]; then
  [ $# -ge 3 ] && [ $# -le 4 ] || die "usage: $0 --tree PATH KEY [OUTDIR]"
  src=$2 name=$3 out=${4:-$repo/.cache/containerd/$3}
  [[ $src = /* ]] || die "the tree path must be absolute: $src"
  [[ $name =~ ^v2\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?\+tree\.[0-9a-f]{16}$ ]] || die "bad tree key: $name"
  modflag=readonly
  [ -d "$src/vendor" ] && modflag=vendor
else
  [ $# -ge 1 ] && [ $# -le 2 ] || die "usage: $0 VERSION|default [OUTDIR]"
  name=$1
  if [ "$name" = default ]; then
    name=$(sed -e 's/#.*//' "$here/versions.txt" | awk '$2 == "default" { print $1; exit }')
    name=${name:-v2.4.2}
  fi
  out=${2:-$repo/.cache/containerd/$name}
  [[ $name =~ ^v2\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$ ]] || die "bad containerd version: $name"
  src=
  modflag=mod # the module cache copy has no vendor/; its go.sum pins every dependency
fi

mkdir -p "$out"
exec 9>"$out/.lock"
flock 9
hash=$({ echo "$name tags=$tags go=$(go env GOVERSION) goarch=$(go env GOARCH)"; sha256sum <"${BASH_SOURCE[0]}"; } | sha256sum | cut -d' ' -f1)
if [ -x "$out/containerd" ] && [ "$(cat "$out/.inputs.sha256" 2>/dev/null)" = "$hash" ]; then
  log "$name: up to date ($out/containerd)"
  echo "$out/containerd"
  exit 0
fi
if [ -z "$src" ]; then
  src=$(cd "$out" && GOFLAGS=-mod=mod go mod download -json "$module@$name" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  [ -d "$src" ] || die "could not download containerd $name from the module proxy"
fi
log "building containerd $name from $src (tags: $tags) -> $out/containerd"
t0=$SECONDS
(cd "$src" && GOFLAGS="-mod=$modflag -buildvcs=false" go build -trimpath -tags "$tags" \
  -ldflags "-X $module/version.Version=$name" -o "$out/containerd.tmp" ./cmd/containerd) ||
  die "build of cmd/containerd failed for $name"
mv -f "$out/containerd.tmp" "$out/containerd"
echo "$hash" >"$out/.inputs.sha256"
log "containerd $name: built in $((SECONDS - t0))s"
echo "$out/containerd"
