#!/usr/bin/env bash
# Build layerconf-goerofs (the go-erofs writer, pinned in go.mod) into <repo>/.cache/goerofs/
# and print its path. Skipped when a hash of the inputs (sources, go.mod, go.sum, this script,
# the Go version) matches the one recorded beside the binary.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out=$(dirname "$(dirname "$here")")/.cache/goerofs
export GOTOOLCHAIN=local CGO_ENABLED=0
command -v go >/dev/null || { echo "[goerofs/build] error: go is not installed" >&2; exit 2; }
mkdir -p "$out"
exec 9>"$out/.lock"
flock 9
hash=$({ go env GOVERSION GOARCH; sha256sum "$here"/*.go "$here/go.mod" "$here/go.sum" "${BASH_SOURCE[0]}" | cut -d' ' -f1; } | sha256sum | cut -d' ' -f1)
if [ -x "$out/layerconf-goerofs" ] && [ "$(cat "$out/.inputs.sha256" 2>/dev/null)" = "$hash" ]; then
  echo "$out/layerconf-goerofs"
  exit 0
fi
echo "[goerofs/build] building $out/layerconf-goerofs" >&2
(cd "$here" && GOFLAGS="-mod=readonly -buildvcs=false" go build -trimpath -o "$out/layerconf-goerofs.tmp" .) \
  || { echo "[goerofs/build] error: go build failed" >&2; exit 2; }
mv -f "$out/layerconf-goerofs.tmp" "$out/layerconf-goerofs"
echo "$hash" >"$out/.inputs.sha256"
echo "$out/layerconf-goerofs"
