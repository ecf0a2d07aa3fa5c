//go:build !containerd_v21 && !containerd_v22

// The daemon path: the same ops, served by a running containerd daemon through containerd's Go
// client, as ctr, nerdctl and CRI reach the snapshotter, the diff service and the content store.
package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/diff/apply"
	"github.com/containerd/containerd/v2/core/leases"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/plugins/diff/walking"
)



// Plugin folders under the daemon's root (containerd names them after the plugin URI).
const (
	daemonContentDir = "io.containerd.content.v1.content"
	daemonErofsDir   = "io.containerd.snapshotter.v1.erofs"
	leaseID          = "layerconf-oracle"
)

// newDaemonServer connects to the containerd daemon at address (root = its configured root).
// Compare and Apply with differ "erofs" go to the daemon's diff service, which picks the
// differ by its configured order, as every client's do. The diff service cannot be asked for
// one differ by name, so differ "walking" runs containerd's walking differ and fs applier in
// this process over the daemon's content store and mount manager: the code the daemon would
// run with the default order ["walking"], fed the same raw snapshot mounts.
func newDaemonServer(root, address string, timeout time.Duration) (_ *server, err error) {
	ctx, cancel := context.WithCancel(namespaces.WithNamespace(context.Background(), namespaces.Default))
	s := &server{root: root, contentRoot: filepath.Join(root, daemonContentDir), ctx: ctx, cancel: cancel}
	defer func() {
		if err != nil {
			s.shutdown()
		}
	}()
	c, err := containerd.New(address, containerd.WithDefaultNamespace(namespaces.Default),
		containerd.WithTimeout(timeout))
	if err != nil {
		return nil, fmt.Errorf("connecting to containerd at %s: %w", address, err)
	}
	s.client = c
	// Everything the oracle creates (snapshots, blobs) hangs on one lease, so the daemon's
	// garbage collector keeps it, as a client's lease does during an unpack or a commit.
	ls := c.LeasesService()
	l, err := ls.Create(ctx, leases.WithID(leaseID))
	if err != nil {
		return nil, fmt.Errorf("creating lease: %w", err)
	}
	s.ctx = leases.WithLease(ctx, l.ID)
	s.sn = c.SnapshotService("erofs")
	s.cs = c.ContentStore()
	s.erofs = c.DiffService()
	s.walking = walking.NewWalkingDiff(s.cs)
	mm := c.MountManager()
	s.mounter = &managedMounter{mm: mm}
	s.applier = apply.NewFileSystemApplierWithMountManager(s.cs, mm)
	return s, nil
}

// daemonSnapshotDir finds the erofs snapshotter's folder of key from the mounts the daemon
// hands out (its metastore is the daemon's, locked while it runs): an active snapshot's
// upperdir or bind source, or the layer.erofs of a one-layer view of a committed snapshot.
func (s *server) daemonSnapshotDir(ctx context.Context, key string) (string, error) {
	info, err := s.sn.Stat(ctx, key)
	if err != nil {
		return "", err
	}
	var ms []mount.Mount
	if info.Kind == snapshots.KindActive {
		ms, err = s.sn.Mounts(ctx, key)
	} else {
		view := fmt.Sprintf("layerconf-oracle-dir-%d", time.Now().UnixNano())
		ms, err = s.sn.View(ctx, view, key)
		defer s.sn.Remove(ctx, view)
	}
	if err != nil {
		return "", err
	}
	snapshots := filepath.Join(s.root, daemonErofsDir, "snapshots") + "/"
	under := func(p string) (string, bool) {
		if !strings.HasPrefix(p, snapshots) {
			return "", false
		}
		id, _, _ := strings.Cut(strings.TrimPrefix(p, snapshots), "/")
		return snapshots + id, id != ""
	}
	for _, m := range ms {
		for _, o := range m.Options {
			if v, ok := strings.CutPrefix(o, "upperdir="); ok {
				if d, ok := under(v); ok {
					return d, nil
				}
			}
		}
	}
	if len(ms) == 1 && (ms[0].Type == "bind" || ms[0].Type == "erofs") {
		if d, ok := under(ms[0].Source); ok {
			return d, nil
		}
	}
	return "", fmt.Errorf("snapshot_dir: cannot tell the erofs snapshotter's folder of %q from its mounts %v", key, ms)
}

// daemonVersion is what the daemon reports about itself (its version service).
func (s *server) daemonVersion() (map[string]string, error) {
	v, err := s.client.(*containerd.Client).Version(s.ctx)
	if err != nil {
		return nil, fmt.Errorf("daemon version: %w", err)
	}
	return map[string]string{"version": v.Version, "revision": v.Revision}, nil
}
