#!/usr/bin/env bash
# Build layerconf-goerofs (the go-erofs writer, pinned in go.mod) into <repo>/.cache/goerofs/ and
# print its path (oracle/build-go-tool.sh: skipped when up to date).
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
exec bash "$here/../build-go-tool.sh" "$here" goerofs layerconf-goerofs
