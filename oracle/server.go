package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"sync"
	"unsafe"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/diff"
	"github.com/containerd/containerd/v2/core/metadata"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/core/snapshots/storage"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/plugins/content/local"
	"github.com/containerd/containerd/v2/plugins/diff/walking"
	erofssnapshotter "github.com/containerd/containerd/v2/plugins/snapshots/erofs"
	"github.com/containerd/log"
	"github.com/moby/sys/mountinfo"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	bolt "go.etcd.io/bbolt"
)

// differ is what the erofs differ constructor returns (its own interface type is unexported).
type differ interface {
	diff.Comparer
	diff.Applier
}

// server holds the containerd components, wired as containerd's plugins wire them:
//
//	<root>/                    erofs snapshotter root (metadata.db, snapshots/<id>/)
//	<root>/content/            local content store (blobs/sha256/<hex>, ingest/)
//	<root>/meta.db             metadata DB wrapping the local store (what differs receive)
//	<root>/mount-manager/      mount manager state (mounts.db, t/) — containerd >= v2.2
type server struct {
	root        string
	contentRoot string // the content store's folder (blobs/sha256/<hex>)
	client      io.Closer // the containerd client on the daemon path; nil on the direct path
	ctx    context.Context
	cancel context.CancelFunc

	sn       snapshots.Snapshotter
	cs       content.Store // metadata.DB's content store, as handed to the diff plugins
	metaDB   *bolt.DB
	erofs    differ
	walking  diff.Comparer
	applier  diff.Applier // the walking diff plugin's applier (fs applier)
	mounter  mounter
	mkfsOpts []string

	mu      sync.Mutex
	mounted []mountRecord // targets mounted by the "mount" op, in mount order
}

// mountRecord remembers a "mount" op so it can be undone (mount manager activation included).
type mountRecord struct {
	target     string
	activation string // mount manager activation name; "" if none was made
}

func newServer(root string, mkfsOpts, ovlOpts []string, tarIndex bool) (_ *server, err error) {
	if err := os.MkdirAll(root, 0o700); err != nil {
		return nil, err
	}
	if root, err = filepath.Abs(root); err == nil {
		root, err = filepath.EvalSymlinks(root) // mountinfo paths are resolved
	}
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(namespaces.WithNamespace(context.Background(), namespaces.Default))
	s := &server{root: root, contentRoot: filepath.Join(root, "content"), ctx: ctx, cancel: cancel,
		mkfsOpts: mkfsOpts}
	defer func() {
		if err != nil {
			s.shutdown()
		}
	}()

	// Snapshotter: plugins/snapshots/erofs/plugin passes WithOvlOptions from config and
	// WithRemapIDs when the kernel supports idmapped mounts (v2.3+).
	var snOpts []erofssnapshotter.Opt
	if len(ovlOpts) > 0 {
		snOpts = append(snOpts, erofssnapshotter.WithOvlOptions(ovlOpts))
	}
	snOpts = append(snOpts, platformSnapshotterOpts()...)
	if s.sn, err = erofssnapshotter.NewSnapshotter(root, snOpts...); err != nil {
		return nil, fmt.Errorf("erofs snapshotter: %w", err)
	}

	// Content: plugins/content/local is a plain local.NewStore; plugins/metadata wraps it in
	// a metadata.DB, whose ContentStore() is what the diff plugins receive. The metadata
	// store keeps the labels (Compare calls Update on them); the local store alone cannot.
	ls, err := local.NewStore(filepath.Join(root, "content"))
	if err != nil {
		return nil, fmt.Errorf("content store: %w", err)
	}
	opts := *bolt.DefaultOptions
	opts.NoFreelistSync = true
	if s.metaDB, err = bolt.Open(filepath.Join(root, "meta.db"), 0o644, &opts); err != nil {
		return nil, fmt.Errorf("metadata db: %w", err)
	}
	mdb := metadata.NewDB(s.metaDB, ls, nil)
	if err := mdb.Init(ctx); err != nil {
		return nil, fmt.Errorf("metadata db init: %w", err)
	}
	s.cs = mdb.ContentStore()

	// Mount manager (v2.2+) with the registered mount handlers; nil-op before v2.2.
	if s.mounter, err = newMounter(ctx, root); err != nil {
		return nil, fmt.Errorf("mount manager: %w", err)
	}

	// Differs, as plugins/diff/erofs/plugin and plugins/diff/walking/plugin build them.
	if s.erofs, err = newErofsDiffer(s.cs, mkfsOpts, tarIndex); err != nil {
		return nil, err
	}
	s.walking = walking.NewWalkingDiff(s.cs)
	s.applier = s.mounter.fsApplier(s.cs)
	return s, nil
}

// shutdown unmounts whatever the "mount" op mounted (newest first) and closes everything.
func (s *server) shutdown() {
	s.mu.Lock()
	recs := s.mounted
	s.mounted = nil
	s.mu.Unlock()
	ctx := namespaces.WithNamespace(context.Background(), namespaces.Default)
	for i := len(recs) - 1; i >= 0; i-- {
		if err := s.undoMount(ctx, recs[i]); err != nil {
			log.L.WithError(err).WithField("target", recs[i].target).Error("cleanup: unmount failed")
		}
	}
	// Anything else still mounted under root: mounts the snapshotter made itself (v2.1
	// mounts parent layers on <id>/fs) or that a failed activation left behind. On the daemon
	// path those are the daemon's, undone when it stops.
	if s.client != nil {
		s.client.Close()
	} else if left, err := mountinfo.GetMounts(mountinfo.PrefixFilter(s.root)); err == nil {
		sort.Slice(left, func(i, j int) bool { return left[i].Mountpoint > left[j].Mountpoint })
		for _, m := range left {
			if err := mount.UnmountAll(m.Mountpoint, 0); err != nil {
				log.L.WithError(err).WithField("target", m.Mountpoint).Error("cleanup: unmount failed")
			}
		}
	}
	if s.mounter != nil {
		s.mounter.Close()
	}
	if s.sn != nil {
		s.sn.Close()
	}
	if s.metaDB != nil {
		s.metaDB.Close()
	}
	if s.cancel != nil {
		s.cancel()
	}
}

func (s *server) undoMount(ctx context.Context, rec mountRecord) error {
	if err := mount.UnmountAll(rec.target, 0); err != nil {
		return err
	}
	if rec.activation != "" {
		return s.mounter.Deactivate(ctx, rec.activation)
	}
	return nil
}

// snapshotID returns the erofs snapshotter's internal id of key. The snapshotter does not
// export it, so this reads the snapshotter's own metastore (field "ms") and asks
// core/snapshots/storage, as containerd's erofs tests do.
func (s *server) snapshotID(ctx context.Context, key string) (string, error) {
	v := reflect.ValueOf(s.sn)
	if v.Kind() == reflect.Pointer {
		v = v.Elem()
	}
	f := v.FieldByName("ms")
	if !f.IsValid() || !f.CanAddr() {
		return "", fmt.Errorf("erofs snapshotter %T has no metastore field", s.sn)
	}
	ms, ok := reflect.NewAt(f.Type(), unsafe.Pointer(f.UnsafeAddr())).Elem().Interface().(interface {
		WithTransaction(context.Context, bool, storage.TransactionCallback) error
	})
	if !ok {
		return "", fmt.Errorf("erofs snapshotter metastore %s has no WithTransaction", f.Type())
	}
	var id string
	err := ms.WithTransaction(ctx, false, func(ctx context.Context) (err error) {
		id, _, _, err = storage.GetInfo(ctx, key)
		return err
	})
	return id, err
}

func (s *server) snapshotDir(ctx context.Context, key string) (string, error) {
	if s.client != nil {
		return s.daemonSnapshotDir(ctx, key)
	}
	id, err := s.snapshotID(ctx, key)
	if err != nil {
		return "", err
	}
	return filepath.Join(s.root, "snapshots", id), nil
}

// blobPath is where the local content store keeps a committed blob.
func (s *server) blobPath(d ocispec.Descriptor) string {
	return filepath.Join(s.contentRoot, "blobs", d.Digest.Algorithm().String(), d.Digest.Encoded())
}

// jsonMount is a mount.Mount on the wire.
type jsonMount struct {
	Type    string   `json:"type"`
	Source  string   `json:"source"`
	Target  string   `json:"target"`
	Options []string `json:"options"`
}

func toJSONMounts(ms []mount.Mount) []jsonMount {
	out := make([]jsonMount, 0, len(ms))
	for _, m := range ms {
		opts := m.Options
		if opts == nil {
			opts = []string{}
		}
		out = append(out, jsonMount{Type: m.Type, Source: m.Source, Target: m.Target, Options: opts})
	}
	return out
}

func fromJSONMounts(ms []jsonMount) []mount.Mount {
	out := make([]mount.Mount, 0, len(ms))
	for _, m := range ms {
		out = append(out, mount.Mount{Type: m.Type, Source: m.Source, Target: m.Target, Options: m.Options})
	}
	return out
}

// request is the union of all ops' fields (unknown fields are rejected).
type request struct {
	Op              string              `json:"op"`
	ID              json.RawMessage     `json:"id,omitempty"`
	Key             string              `json:"key"`
	Parent          string              `json:"parent"`
	Name            string              `json:"name"`
	Target          string              `json:"target"`
	Differ          string              `json:"differ"`
	Lower           string              `json:"lower"`
	Upper           string              `json:"upper"`
	LowerMounts     *[]jsonMount        `json:"lower_mounts"`
	UpperMounts     *[]jsonMount        `json:"upper_mounts"`
	Mounts          *[]jsonMount        `json:"mounts"`
	MediaType       string              `json:"media_type"`
	SourceDateEpoch *int64              `json:"source_date_epoch"`
	Labels          map[string]string   `json:"labels"`
	Reference       string              `json:"reference"`
	Activate        bool                `json:"activate"`
	Path            string              `json:"path"`
	Descriptor      *ocispec.Descriptor `json:"descriptor"`
	Entries         []tarEntry          `json:"entries"`
}
