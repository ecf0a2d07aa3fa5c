#!/usr/bin/env bash
# Build layerconf-mkfs-shim (the recording mkfs.erofs, harness/mkfs_shim.py) into
# <repo>/.cache/mkfsshim/ and print its path. Skipped when a hash of the inputs (sources, go.mod,
# this script, the Go version) matches the one recorded beside the binary.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out=$(dirname "$(dirname "$here")")/.cache/mkfsshim
export GOTOOLCHAIN=local CGO_ENABLED=0
command -v go >/dev/null || { echo "[mkfsshim/build] error: go is not installed" >&2; exit 2; }
mkdir -p "$out"
exec 9>"$out/.lock"
flock 9
hash=$({ go env GOVERSION GOARCH; sha256sum "$here"/*.go "$here/go.mod" "${BASH_SOURCE[0]}" | cut -d' ' -f1; } | sha256sum | cut -d' ' -f1)
if [ -x "$out/layerconf-mkfs-shim" ] && [ "$(cat "$out/.inputs.sha256" 2>/dev/null)" = "$hash" ]; then
  echo "$out/layerconf-mkfs-shim"
  exit 0
fi
echo "[mkfsshim/build] building $out/layerconf-mkfs-shim" >&2
(cd "$here" && GOFLAGS="-mod=readonly -buildvcs=false" go build -trimpath -ldflags=-s -o "$out/layerconf-mkfs-shim.tmp" .) \
  || { echo "[mkfsshim/build] error: go build failed" >&2; exit 2; }
mv -f "$out/layerconf-mkfs-shim.tmp" "$out/layerconf-mkfs-shim"
echo "$hash" >"$out/.inputs.sha256"
echo "$out/layerconf-mkfs-shim"
