//go:build !containerd_v21 && !containerd_v22

// Adapter for containerd v2.3 and later (the default build).
package main

import (
	erofssnapshotter "github.com/containerd/containerd/v2/plugins/snapshots/erofs"
	"github.com/containerd/containerd/v2/plugins/snapshots/overlay/overlayutils"
)

const adapterName = "v2.3+"

// platformSnapshotterOpts mirrors plugins/snapshots/erofs/plugin: remap IDs when the kernel
// supports idmapped mounts.
func platformSnapshotterOpts() []erofssnapshotter.Opt {
	if ok, err := overlayutils.SupportsIDMappedMounts(); err == nil && ok {
		return []erofssnapshotter.Opt{erofssnapshotter.WithRemapIDs()}
	}
	return nil
}
