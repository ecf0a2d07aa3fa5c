#!/usr/bin/env bash
# Build layerconf-mkfs-shim (the recording mkfs.erofs, harness/mkfs_shim.py) into
# <repo>/.cache/mkfsshim/ and print its path (oracle/build-go-tool.sh: skipped when up to date).
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
exec bash "$here/../build-go-tool.sh" "$here" mkfsshim layerconf-mkfs-shim -ldflags=-s
