#!/usr/bin/env bash
# Build a small Go program of oracle/ (its own module: FOLDER) into <repo>/.cache/NAME/BINARY and
# print its path. Skipped when a hash of the inputs (the folder's .go files, go.mod, go.sum if
# any, this script, the caller's script, the Go version) matches the one recorded beside it.
# Usage: build-go-tool.sh FOLDER NAME BINARY [go build flag...]
set -euo pipefail
here=$1 name=$2 bin=$3
shift 3
out=$(dirname "$(dirname "$here")")/.cache/$name
export GOTOOLCHAIN=local CGO_ENABLED=0
command -v go >/dev/null || { echo "[$name/build] error: go is not installed" >&2; exit 2; }
mkdir -p "$out"
exec 9>"$out/.lock"
flock 9
inputs=("$here"/*.go "$here/go.mod" "$here/build.sh" "${BASH_SOURCE[0]}")
[ -f "$here/go.sum" ] && inputs+=("$here/go.sum")
hash=$({ go env GOVERSION GOARCH; sha256sum "${inputs[@]}" | cut -d' ' -f1; } | sha256sum | cut -d' ' -f1)
if [ -x "$out/$bin" ] && [ "$(cat "$out/.inputs.sha256" 2>/dev/null)" = "$hash" ]; then
  echo "$out/$bin"
  exit 0
fi
echo "[$name/build] building $out/$bin" >&2
(cd "$here" && GOFLAGS="-mod=readonly -buildvcs=false" go build -trimpath "$@" -o "$out/$bin.tmp" .) \
  || { echo "[$name/build] error: go build failed" >&2; exit 2; }
mv -f "$out/$bin.tmp" "$out/$bin"
echo "$hash" >"$out/.inputs.sha256"
echo "$out/$bin"
