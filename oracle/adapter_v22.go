//go:build containerd_v22

// Adapter for containerd v2.2.x (v2.2.3+, which has NewFileSystemApplierWithMountManager):
// the snapshotter has no WithRemapIDs yet.
package main

import (
	erofssnapshotter "github.com/containerd/containerd/v2/plugins/snapshots/erofs"
)

const adapterName = "v2.2"

func platformSnapshotterOpts() []erofssnapshotter.Opt { return nil }
