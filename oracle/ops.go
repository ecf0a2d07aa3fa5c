package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"time"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/diff"
	"github.com/containerd/containerd/v2/core/mount"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// dispatch runs one request and returns the op-specific response fields.
func (s *server) dispatch(req *request) (map[string]any, error) {
	ctx := s.ctx
	switch req.Op {
	case "version":
		return s.opVersion()
	case "prepare":
		return mountsResponse(s.sn.Prepare(ctx, req.Key, req.Parent))
	case "view":
		return mountsResponse(s.sn.View(ctx, req.Key, req.Parent))
	case "mounts":
		return mountsResponse(s.sn.Mounts(ctx, req.Key))
	case "commit":
		return nil, s.sn.Commit(ctx, req.Name, req.Key)
	case "remove":
		return nil, s.sn.Remove(ctx, req.Key)
	case "snapshot_dir":
		dir, err := s.snapshotDir(ctx, req.Key)
		if err != nil {
			return nil, err
		}
		return map[string]any{"dir": dir}, nil
	case "mount":
		return nil, s.opMount(ctx, req)
	case "unmount":
		return nil, s.opUnmount(ctx, req)
	case "compare":
		return s.opCompare(ctx, req)
	case "ingest":
		return s.opIngest(ctx, req)
	case "apply":
		return s.opApply(ctx, req)
	case "tar":
		return opTar(req.Entries)
	case "close":
		return nil, nil
	default:
		return nil, fmt.Errorf("unknown op %q", req.Op)
	}
}

func mountsResponse(ms []mount.Mount, err error) (map[string]any, error) {
	if err != nil {
		return nil, err
	}
	return map[string]any{"mounts": toJSONMounts(ms)}, nil
}

// mountsFor returns the explicit mounts of a request if given, else the snapshotter's
// mounts of key; key "" means no mounts at all.
func (s *server) mountsFor(ctx context.Context, key string, explicit *[]jsonMount) ([]mount.Mount, error) {
	if explicit != nil {
		return fromJSONMounts(*explicit), nil
	}
	if key == "" {
		return nil, nil
	}
	return s.sn.Mounts(ctx, key)
}

func (s *server) opVersion() (map[string]any, error) {
	resp := map[string]any{"go": runtime.Version(), "adapter": adapterName, "mkfs": nil,
		"root": s.root, "mkfs_options": append([]string{}, s.mkfsOpts...), "path": "direct"}
	if s.client != nil {
		resp["path"] = "daemon"
		if v, err := s.daemonVersion(); err == nil {
			resp["daemon"] = v
		} else {
			return nil, err
		}
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			v := d.Version
			if d.Replace != nil {
				v = d.Replace.Version
			}
			switch d.Path {
			case "github.com/containerd/containerd/v2":
				resp["containerd"] = v
			case "github.com/containerd/continuity":
				resp["continuity"] = v
			case "github.com/klauspost/compress":
				resp["klauspost_compress"] = v
			}
		}
	}
	if out, err := exec.Command("mkfs.erofs", "--version").CombinedOutput(); err == nil {
		resp["mkfs"], _, _ = strings.Cut(strings.TrimSpace(string(out)), "\n")
	}
	return resp, nil
}

// opMount mounts a snapshot at target as containerd's clients do from v2.2 on: the mount
// manager activates what it handles (erofs loop mounts, "format/", "mkdir/" and "mkfs/"
// transformers) and mount.All performs the remaining system mounts.
func (s *server) opMount(ctx context.Context, req *request) (err error) {
	if req.Target == "" {
		return errors.New("mount: target is required")
	}
	target, err := filepath.Abs(req.Target)
	if err != nil {
		return err
	}
	mounts, err := s.mountsFor(ctx, req.Key, req.Mounts)
	if err != nil {
		return err
	}
	name := "layerconf-oracle:" + target
	system, activated, err := s.mounter.Activate(ctx, name, mounts)
	if err != nil {
		return err
	}
	rec := mountRecord{target: target}
	if activated {
		rec.activation = name
	}
	if err := mount.All(system, target); err != nil {
		_ = mount.UnmountMounts(system, target, 0)
		if activated {
			_ = s.mounter.Deactivate(ctx, name)
		}
		return err
	}
	s.mu.Lock()
	s.mounted = append(s.mounted, rec)
	s.mu.Unlock()
	return nil
}

// opUnmount undoes a "mount" op (or unmounts any other mount stack at target).
func (s *server) opUnmount(ctx context.Context, req *request) error {
	if req.Target == "" {
		return errors.New("unmount: target is required")
	}
	target, err := filepath.Abs(req.Target)
	if err != nil {
		return err
	}
	s.mu.Lock()
	rec, idx := mountRecord{target: target}, -1
	for i := len(s.mounted) - 1; i >= 0; i-- {
		if s.mounted[i].target == target {
			rec, idx = s.mounted[i], i
			break
		}
	}
	s.mu.Unlock()
	if err := s.undoMount(ctx, rec); err != nil {
		return err
	}
	if idx >= 0 {
		s.mu.Lock()
		s.mounted = append(s.mounted[:idx], s.mounted[idx+1:]...)
		s.mu.Unlock()
	}
	return nil
}

// opCompare calls Compare with the snapshotter's mounts, exactly as containerd's diff
// service does (plugins/services/diff/local.go builds the same options).
func (s *server) opCompare(ctx context.Context, req *request) (map[string]any, error) {
	var c diff.Comparer
	switch req.Differ {
	case "erofs":
		c = s.erofs
	case "walking":
		c = s.walking
	default:
		return nil, fmt.Errorf("compare: unknown differ %q", req.Differ)
	}
	lower, err := s.mountsFor(ctx, req.Lower, req.LowerMounts)
	if err != nil {
		return nil, err
	}
	upper, err := s.mountsFor(ctx, req.Upper, req.UpperMounts)
	if err != nil {
		return nil, err
	}
	if req.Activate {
		// Not what containerd's diff service does: it passes snapshot mounts through raw.
		// This lets a caller see what the differ would make of activated mounts.
		for i, ms := range []*[]mount.Mount{&lower, &upper} {
			name := fmt.Sprintf("layerconf-oracle:compare:%d:%d", time.Now().UnixNano(), i)
			system, activated, err := s.mounter.Activate(ctx, name, *ms)
			if err != nil {
				return nil, err
			}
			if activated {
				defer s.mounter.Deactivate(ctx, name)
			}
			*ms = system
		}
	}
	var opts []diff.Opt
	if req.MediaType != "" {
		opts = append(opts, diff.WithMediaType(req.MediaType))
	}
	if req.Reference != "" {
		opts = append(opts, diff.WithReference(req.Reference))
	}
	if req.Labels != nil {
		opts = append(opts, diff.WithLabels(req.Labels))
	}
	if req.SourceDateEpoch != nil {
		tm := time.Unix(*req.SourceDateEpoch, 0).UTC() // as timestamppb.AsTime gives it
		opts = append(opts, diff.WithSourceDateEpoch(&tm))
	}
	desc, err := c.Compare(ctx, lower, upper, opts...)
	if err != nil {
		return nil, err
	}
	info, err := s.cs.Info(ctx, desc.Digest)
	if err != nil {
		return nil, err
	}
	labels := info.Labels
	if labels == nil {
		labels = map[string]string{}
	}
	return map[string]any{"descriptor": desc, "labels": labels, "blob": s.blobPath(desc)}, nil
}

// opIngest writes a file into the content store (as a pull would) and returns its descriptor.
func (s *server) opIngest(ctx context.Context, req *request) (map[string]any, error) {
	f, err := os.Open(req.Path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	dgst, err := digest.SHA256.FromReader(f)
	if err != nil {
		return nil, err
	}
	size, err := f.Seek(0, io.SeekCurrent)
	if err != nil {
		return nil, err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	desc := ocispec.Descriptor{MediaType: req.MediaType, Digest: dgst, Size: size}
	if err := content.WriteBlob(ctx, s.cs, "layerconf-ingest-"+dgst.Encoded(), f, desc); err != nil {
		return nil, err
	}
	return map[string]any{"descriptor": desc, "blob": s.blobPath(desc)}, nil
}

// opApply calls Apply with the active snapshot's mounts, as containerd's unpacker does.
// "erofs" is the erofs differ; "walking" is the walking diff plugin's applier.
func (s *server) opApply(ctx context.Context, req *request) (map[string]any, error) {
	var a diff.Applier
	switch req.Differ {
	case "erofs":
		a = s.erofs
	case "walking":
		a = s.applier
	default:
		return nil, fmt.Errorf("apply: unknown differ %q", req.Differ)
	}
	if req.Descriptor == nil {
		return nil, errors.New("apply: descriptor is required")
	}
	mounts, err := s.mountsFor(ctx, req.Key, req.Mounts)
	if err != nil {
		return nil, err
	}
	desc, err := a.Apply(ctx, *req.Descriptor, mounts)
	if err != nil {
		return nil, err
	}
	resp := map[string]any{"descriptor": desc, "layer": nil}
	if req.Key != "" {
		if dir, err := s.snapshotDir(ctx, req.Key); err == nil {
			if p := filepath.Join(dir, "layer.erofs"); fileExists(p) {
				resp["layer"] = p
			}
		}
	}
	return resp, nil
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
