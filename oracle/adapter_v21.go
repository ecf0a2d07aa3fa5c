//go:build containerd_v21

// Adapter for containerd v2.1.x: the erofs differ takes mkfs options as a plain slice, there
// is no mount manager (snapshot mounts are plain kernel mounts) and the walking diff
// plugin's applier is apply.NewFileSystemApplier.
package main

import (
	"context"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/diff"
	"github.com/containerd/containerd/v2/core/diff/apply"
	"github.com/containerd/containerd/v2/core/mount"
	erofsdiffer "github.com/containerd/containerd/v2/plugins/diff/erofs"
	erofssnapshotter "github.com/containerd/containerd/v2/plugins/snapshots/erofs"
)

const adapterName = "v2.1"

// v2.1 has no enable_tar_index: the plugin config ignores the key, and so does this.
func newErofsDiffer(cs content.Store, mkfsOpts []string, _ bool) (differ, error) {
	return erofsdiffer.NewErofsDiffer(cs, mkfsOpts), nil
}

func platformSnapshotterOpts() []erofssnapshotter.Opt { return nil }

// plainMounter hands mounts straight to mount.All, as v2.1 clients do.
type plainMounter struct{}

func newMounter(context.Context, string) (mounter, error) { return plainMounter{}, nil }

func (plainMounter) Activate(_ context.Context, _ string, ms []mount.Mount) ([]mount.Mount, bool, error) {
	return ms, false, nil
}
func (plainMounter) Deactivate(context.Context, string) error { return nil }
func (plainMounter) Close() error                             { return nil }
func (plainMounter) fsApplier(cs content.Store) diff.Applier  { return apply.NewFileSystemApplier(cs) }
