#!/usr/bin/env bash
# Build a pinned erofs-utils version (erofs-utils/versions.txt) from Debian's source package.
#
#   erofs-utils/build.sh VERSION|all [PREFIX]
#
# PREFIX defaults to <repo>/.cache/erofs-utils/VERSION; prints PREFIX/bin on stdout, logs on
# stderr. Skipped when PREFIX/bin/mkfs.erofs already reports VERSION. Needs the suite's deb-src
# line (.ci/bootstrap adds them) and the build dependencies bootstrap installs; no root.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
log() { printf '[erofs-utils/build] %s\n' "$*" >&2; }
die() { printf '[erofs-utils/build] error: %s\n' "$*" >&2; exit 2; }

lines() { sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$here/versions.txt"; }
suite_of() { lines | awk -v v="$1" '$1 == v { print $2 }'; }

build() {
  local version=$1 prefix=${2:-$repo/.cache/erofs-utils/$1} suite
  suite=$(suite_of "$version")
  [ -n "$suite" ] || die "erofs-utils $version is not pinned in erofs-utils/versions.txt (pinned: $(lines | awk '{print $1}' | tr '\n' ' '))"
  if [ -x "$prefix/bin/mkfs.erofs" ] && [[ $("$prefix/bin/mkfs.erofs" --version 2>&1) == *" $version"* ]]; then
    echo "$prefix/bin"; return 0
  fi
  local d; d=$(mktemp -d)
  trap 'rm -rf "$d"' RETURN
  log "building erofs-utils $version from erofs-utils/$suite into $prefix"
  (cd "$d" && timeout 300 apt-get source -qq "erofs-utils/$suite" >/dev/null 2>&1) \
    || die "apt-get source erofs-utils/$suite failed (is its deb-src line in /etc/apt/sources.list.d? run .ci/bootstrap)"
  local src; src=$(echo "$d"/erofs-utils-*/)
  [[ $src == *"-$version/" ]] || die "erofs-utils/$suite is now $(basename "$src"), not $version: update erofs-utils/versions.txt"
  (cd "$src" && { [ -x configure ] || ./autogen.sh >/dev/null 2>&1; } \
    && ./configure -q --prefix="$prefix" --disable-fuse --without-selinux >/dev/null \
    && make -s -j"$(nproc)" >/dev/null 2>&1 && make -s install >/dev/null) \
    || die "building erofs-utils $version failed"
  [[ $("$prefix/bin/mkfs.erofs" --version 2>&1) == *" $version"* ]] || die "the built mkfs.erofs is not $version"
  echo "$prefix/bin"
}

case ${1:-} in
  all) for v in $(lines | awk '{print $1}'); do build "$v"; done ;;
  "") die "usage: erofs-utils/build.sh VERSION|all [PREFIX]" ;;
  *) build "$@" ;;
esac
