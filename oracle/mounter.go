package main

import (
	"context"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/diff"
	"github.com/containerd/containerd/v2/core/mount"
)

// mounter is the version-dependent part of mounting: containerd v2.2+ activates snapshot
// mounts through its mount manager; v2.1 mounts them directly.
type mounter interface {
	// Activate performs the mounts the mount manager handles and returns the system
	// mounts left for the caller (mount.All); activated reports whether an activation
	// named name was recorded (and must be deactivated).
	Activate(ctx context.Context, name string, mounts []mount.Mount) (system []mount.Mount, activated bool, err error)
	Deactivate(ctx context.Context, name string) error
	Close() error
	// fsApplier is the walking diff plugin's Applier.
	fsApplier(cs content.Store) diff.Applier
}
