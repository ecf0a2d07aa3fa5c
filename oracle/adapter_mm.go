//go:build !containerd_v21

// Shared by containerd v2.2 and later: functional differ options and the mount manager.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/diff"
	"github.com/containerd/containerd/v2/core/diff/apply"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/mount/manager"
	"github.com/containerd/containerd/v2/plugins"
	erofsdiffer "github.com/containerd/containerd/v2/plugins/diff/erofs"
	_ "github.com/containerd/containerd/v2/plugins/mount/erofs" // registers the "erofs" mount handler
	"github.com/containerd/errdefs"
	"github.com/containerd/plugin"
	"github.com/containerd/plugin/registry"
	bolt "go.etcd.io/bbolt"
)

// newErofsDiffer builds the differ as plugins/diff/erofs/plugin does with mkfs_options and
// enable_tar_index set.
func newErofsDiffer(cs content.Store, mkfsOpts []string, tarIndex bool) (differ, error) {
	var opts []erofsdiffer.DifferOpt
	if len(mkfsOpts) > 0 {
		opts = append(opts, erofsdiffer.WithMkfsOptions(mkfsOpts))
	}
	if tarIndex {
		opts = append(opts, erofsdiffer.WithTarIndexMode())
	}
	return erofsdiffer.NewErofsDiffer(cs, opts...), nil
}

// managedMounter wraps a core/mount/manager set up as plugins/mount does.
type managedMounter struct {
	mm mount.Manager
}

func newMounter(ctx context.Context, root string) (mounter, error) {
	state := filepath.Join(root, "mount-manager")
	handlers, err := mountHandlers(ctx, root, state)
	if err != nil {
		return nil, err
	}
	var opts []manager.Opt
	for name, h := range handlers {
		opts = append(opts, manager.WithMountHandler(name, h))
	}
	// containerd allows mount handlers to operate under its root directory.
	opts = append(opts, manager.WithAllowedRoot(root))
	targets := filepath.Join(state, "t")
	if err := os.MkdirAll(targets, 0o700); err != nil {
		return nil, err
	}
	db, err := bolt.Open(filepath.Join(state, "mounts.db"), 0o600, nil)
	if err != nil {
		return nil, err
	}
	mm, err := manager.NewManager(db, targets, opts...)
	if err != nil {
		db.Close()
		return nil, err
	}
	return &managedMounter{mm: mm}, nil
}

// mountHandlers initialises every registered mount handler plugin (on Linux: "erofs"),
// as containerd's plugin graph would; v2.2's erofs handler has no exported constructor.
func mountHandlers(ctx context.Context, root, state string) (map[string]mount.Handler, error) {
	handlers := map[string]mount.Handler{}
	for _, reg := range registry.Graph(func(*plugin.Registration) bool { return false }) {
		if reg.Type != plugins.MountHandlerPlugin {
			continue
		}
		ic := plugin.NewContext(ctx, plugin.NewPluginSet(), map[string]string{
			plugins.PropertyRootDir:  filepath.Join(root, "plugins", reg.URI()),
			plugins.PropertyStateDir: filepath.Join(state, "plugins", reg.URI()),
		})
		ic.Config = reg.Config
		inst, err := reg.Init(ic).Instance()
		if err != nil {
			if plugin.IsSkipPlugin(err) {
				continue
			}
			return nil, fmt.Errorf("mount handler %s: %w", reg.URI(), err)
		}
		h, ok := inst.(mount.Handler)
		if !ok {
			return nil, fmt.Errorf("mount handler %s is a %T", reg.URI(), inst)
		}
		handlers[reg.ID] = h
	}
	return handlers, nil
}

// Activate activates mounts as containerd's CRI and task paths do (no WithTemporary) and
// returns the system mounts for mount.All. When the manager performed every mount itself (a
// view of a single erofs layer) it returns no system mount; the top mount is then exposed
// with the bind mount that WithTemporary would add. WithTemporary itself is not used:
// v2.2.x and v2.3.x panic with it (index out of range) when the last mount is transformed.
func (m *managedMounter) Activate(ctx context.Context, name string, mounts []mount.Mount) ([]mount.Mount, bool, error) {
	info, err := m.mm.Activate(ctx, name, mounts)
	if errors.Is(err, errdefs.ErrNotImplemented) {
		return mounts, false, nil // nothing for the manager: plain system mounts
	}
	if err != nil {
		return nil, false, err
	}
	system := info.System
	if len(system) == 0 && len(info.Active) > 0 {
		top := info.Active[len(info.Active)-1].MountPoint
		system = []mount.Mount{{Type: "bind", Source: top, Options: []string{"rbind"}}}
	}
	return system, true, nil
}

func (m *managedMounter) Deactivate(ctx context.Context, name string) error {
	return m.mm.Deactivate(ctx, name)
}

func (m *managedMounter) Close() error {
	if c, ok := m.mm.(io.Closer); ok {
		return c.Close()
	}
	return nil
}

func (m *managedMounter) fsApplier(cs content.Store) diff.Applier {
	return apply.NewFileSystemApplierWithMountManager(cs, m.mm)
}
