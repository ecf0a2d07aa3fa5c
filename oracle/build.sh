#!/usr/bin/env bash
# Build the oracle for one containerd version.
#
#   oracle/build.sh [VERSION|default|all] [OUTDIR]
#   oracle/build.sh --tree PATH KEY [OUTDIR]
#
# VERSION is a containerd tag (v2.3.7) or a module pseudo-version the Go module proxy serves
# (v2.4.3-0.20260101000000-abcdef123456); "default" (the default) is the versions.txt line marked
# "default" (else v2.4.2); "all" builds every version in versions.txt. OUTDIR defaults to
# <repo>/.cache/oracle/<version>. Prints the binary path(s) on stdout; logs go to stderr.
#
# The default version builds from oracle/go.mod + go.sum. Any other version builds from
# oracle/modules/<version>/go.{mod,sum} (versions listed in versions.txt; committed) or
# <repo>/.cache/oracle-modules/<version>/ (any other version); when those are missing they are
# generated once (a fresh module requiring only containerd@VERSION, then `go mod tidy` through the
# module proxy, so every dependency is at the version that containerd tag selects).
#
# --tree builds against a local containerd checkout PATH (absolute) under the name KEY
# (vX.Y.Z+tree.<hash>, from harness/srctree.py: base version + content hash). The go.mod is
# generated in <repo>/.cache/oracle-build/KEY, never in the tree: every requirement of the tree's
# go.mod at the tree's version (so dependencies are what the tree itself builds with, and the
# module graph need not be walked), containerd/v2 at the base version replaced by PATH, the tree's
# go directive; go.sum = the tree's plus the oracle's. Then `go mod tidy` offline, else the
# build's missing requirements resolved offline, else the same through the module proxy, else
# `go mod tidy` through the proxy.
# Tags come from the base version.
# Build tags select the API adapter: v2.1.x -> containerd_v21, v2.2.x -> containerd_v22,
# later -> none; a versions.txt line may override with tags=a,b.
# The build is skipped when a hash of all inputs (sources, module files, version, tags, Go
# version, this script) matches OUTDIR/.inputs.sha256.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
log() { printf '[oracle/build] %s\n' "$*" >&2; }
die() { printf '[oracle/build] error: %s\n' "$*" >&2; exit 2; }

# A hash of every input of a build: DESCRIPTION, this script, the FILES given, the oracle's
# sources and the Go toolchain; a build is skipped when OUTDIR/.inputs.sha256 holds it.
inputs_hash() { # DESCRIPTION FILE...
  local desc=$1; shift
  {
    echo "$desc go=$(go env GOVERSION) goarch=$(go env GOARCH)"
    sha256sum "${BASH_SOURCE[0]}" "$@" | cut -d' ' -f1
    for f in "$here"/*.go; do printf '%s ' "$(basename "$f")"; sha256sum <"$f" | cut -d' ' -f1; done
  } | sha256sum | cut -d' ' -f1
}
up_to_date() { # OUTDIR HASH LABEL: prints the binary and succeeds when the build can be skipped
  [ -x "$1/layerconf-oracle" ] && [ "$(cat "$1/.inputs.sha256" 2>/dev/null)" = "$2" ] || return 1
  log "$3: up to date ($1/layerconf-oracle)"
  echo "$1/layerconf-oracle"
}
export GOTOOLCHAIN=local CGO_ENABLED=0

# versions.txt: "VERSION [default] [tags=a,b]" per line; # comments.
version_lines() { sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$here/versions.txt"; }
default_version() {
  version_lines | awk '{ for (i = 2; i <= NF; i++) if ($i == "default") { print $1; exit } }' | grep . ||
    echo v2.4.2
}
tags_for() { # explicit tags=... in versions.txt, else by minor version
  local t
  t=$(version_lines | awk -v v="$1" '$1 == v { for (i = 2; i <= NF; i++) if ($i ~ /^tags=/) { sub(/^tags=/, "", $i); gsub(/,/, " ", $i); print $i } }')
  if [ -n "$t" ]; then echo "$t"; return; fi
  case $1 in
    v2.0.*) die "containerd $1 has no erofs differ" ;;
    v2.1.*) echo containerd_v21 ;;
    v2.2.*) echo containerd_v22 ;;
    *) echo "" ;;
  esac
}

listed() { version_lines | awk -v v="$1" '$1 == v { found = 1 } END { exit !found }'; }

# "module@version" for every requirement of a go.mod (single lines and require blocks).
requirements() {
  awk '
    /^require[ \t]*\(/ { block = 1; next }
    block && /^[ \t]*\)/ { block = 0; next }
    block && NF >= 2 && $1 !~ /^\/\// { print $1 "@" $2; next }
    /^require[ \t]+[^( \t]/ { print $2 "@" $3 }
  ' "$1"
}

build_tree() {
  local tree=$1 key=$2 out=${3:-$repo/.cache/oracle/$2}
  [[ $key =~ ^(v2\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?)\+tree\.[0-9a-f]{16}$ ]] || die "bad tree key: $key"
  local base=${BASH_REMATCH[1]}
  [[ $tree = /* ]] || die "the tree path must be absolute: $tree"
  [ -f "$tree/go.mod" ] || die "$tree has no go.mod"
  local tags bdir hash
  tags=$(tags_for "$base")
  mkdir -p "$out"
  exec 9>"$out/.lock"
  flock 9
  # The key carries the tree's content hash; the rest is what the version builds hash.
  hash=$(inputs_hash "tree=$key path=$tree tags=$tags" "$here/go.sum")
  up_to_date "$out" "$hash" "tree $tree ($key)" && return
  bdir=$repo/.cache/oracle-build/$key
  rm -rf "$bdir"
  mkdir -p "$bdir"
  cp "$here"/*.go "$bdir/"
  sort -u "$here/go.sum" "$tree/go.sum" >"$bdir/go.sum"
  local t0=$SECONDS how godir
  godir=$(awk '$1 == "go" { print $2; exit }' "$tree/go.mod")
  (
    cd "$bdir"
    printf 'module layerconf/oracle\n\ngo %s\n' "${godir:-1.23}" >go.mod
    local args=() r
    for r in $(requirements "$tree/go.mod"); do
      [ "${r%@*}" = github.com/containerd/containerd/v2 ] || args+=("-require=$r")
    done
    go mod edit "${args[@]}" -require="github.com/containerd/containerd/v2@$base" \
      -replace="github.com/containerd/containerd/v2=$tree"
    # tidy and the build look at every file whatever its build tags: drop the other adapters
    rm -f $(GOFLAGS=-mod=mod GOPROXY=off go list -e -tags "$tags" -f '{{join .IgnoredGoFiles " "}}' . 2>/dev/null)
  ) || die "could not prepare the module for $tree"
  if (cd "$bdir" && GOPROXY=off GOFLAGS=-mod=mod go mod tidy) >"$bdir/resolve.log" 2>&1; then
    how="go mod tidy (offline)"
  elif (cd "$bdir" && GOPROXY=off GOFLAGS="-mod=mod -buildvcs=false" go list -tags "$tags" -deps . >/dev/null) >>"$bdir/resolve.log" 2>&1; then
    how="requirements resolved offline (tidy offline needs modules not in the module cache)"
  elif (cd "$bdir" && GOFLAGS="-mod=mod -buildvcs=false" go list -tags "$tags" -deps . >/dev/null) >>"$bdir/resolve.log" 2>&1; then
    how="requirements resolved through the module proxy (tidy would also want every dependency's test dependencies)"
  elif (cd "$bdir" && GOFLAGS=-mod=mod go mod tidy) >>"$bdir/resolve.log" 2>&1; then
    how="go mod tidy (through the module proxy)"
  else
    tail -n 8 "$bdir/resolve.log" >&2
    die "could not resolve the dependencies of $tree (log: $bdir/resolve.log)"
  fi
  log "tree $tree ($key, tags: ${tags:-none}): $how"
  (cd "$bdir" && GOFLAGS="-mod=readonly -buildvcs=false" go build -trimpath -tags "$tags" \
    -o "$out/layerconf-oracle.tmp" .) || die "build failed for the containerd tree $tree"
  mv -f "$out/layerconf-oracle.tmp" "$out/layerconf-oracle"
  echo "$hash" >"$out/.inputs.sha256"
  log "tree $tree ($key): built in $((SECONDS - t0))s"
  echo "$out/layerconf-oracle"
}

build_one() {
  local version=$1 out=${2:-$repo/.cache/oracle/$1}
  [[ $version =~ ^v2\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$ ]] || die "bad containerd version: $version"
  local tags pinned moddir bdir
  tags=$(tags_for "$version")
  pinned=$(awk '$1 == "github.com/containerd/containerd/v2" { print $2 }' <(sed 's/^require //' "$here/go.mod"))
  mkdir -p "$out"
  exec 9>"$out/.lock"
  flock 9

  if [ "$version" = "$pinned" ]; then
    moddir=$here
  else
    moddir=$here/modules/$version
    listed "$version" || moddir=$repo/.cache/oracle-modules/$version
    if [ ! -f "$moddir/go.mod" ] || [ ! -f "$moddir/go.sum" ]; then
      log "generating $moddir/go.mod for containerd $version (go mod tidy)"
      local gen
      gen=$(mktemp -d)
      cp "$here"/*.go "$gen/"
      printf 'module layerconf/oracle\n\ngo 1.23\n\nrequire github.com/containerd/containerd/v2 %s\n' "$version" >"$gen/go.mod"
      # tidy looks at every file whatever its build tags: drop the other versions' adapters
      (cd "$gen" && rm -f $(GOFLAGS=-mod=readonly go list -e -tags "$tags" -f '{{join .IgnoredGoFiles " "}}' .) &&
        GOFLAGS=-mod=mod go mod tidy) || { rm -rf "$gen"; die "go mod tidy failed for $version"; }
      mkdir -p "$moddir"
      cp "$gen/go.mod" "$gen/go.sum" "$moddir/"
      rm -rf "$gen"
    fi
  fi

  local hash
  hash=$(inputs_hash "version=$version tags=$tags" "$moddir/go.mod" "$moddir/go.sum")
  up_to_date "$out" "$hash" "containerd $version" && return

  bdir=$repo/.cache/oracle-build/$version
  rm -rf "$bdir"
  mkdir -p "$bdir"
  cp "$here"/*.go "$moddir/go.mod" "$moddir/go.sum" "$bdir/"
  log "building containerd $version (tags: ${tags:-none}) -> $out/layerconf-oracle"
  local t0=$SECONDS
  (cd "$bdir" && GOFLAGS="-mod=readonly -buildvcs=false" go build -trimpath -tags "$tags" \
    -o "$out/layerconf-oracle.tmp" .) || die "build failed for containerd $version"
  mv -f "$out/layerconf-oracle.tmp" "$out/layerconf-oracle"
  echo "$hash" >"$out/.inputs.sha256"
  log "containerd $version: built in $((SECONDS - t0))s"
  echo "$out/layerconf-oracle"
}

command -v go >/dev/null || die "go is not installed"
if [ "${1:-}" = --tree ]; then
  [ $# -ge 3 ] && [ $# -le 4 ] || die "usage: $0 --tree PATH KEY [OUTDIR]"
  build_tree "$2" "$3" "${4:-}"
  exit 0
fi
[ $# -le 2 ] || die "usage: $0 [VERSION|default|all] [OUTDIR]"
case ${1:-default} in
  default) build_one "$(default_version)" "${2:-}" ;;
  all)
    [ -z "${2:-}" ] || die "OUTDIR cannot be combined with 'all'"
    for v in $(version_lines | awk '{ print $1 }'); do build_one "$v"; done ;;
  *) build_one "$1" "${2:-}" ;;
esac
