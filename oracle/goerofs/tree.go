package main

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"sort"
	"strings"
	"time"

	erofs "github.com/erofs/go-erofs"
)

// go-erofs v0.3.1 takes files through its Writer calls or through CopyFrom of an fs.FS; it
// reads no tars and can neither remove an entry nor link one (no Writer.Link, no RemoveAll).
// So a layer is replayed here into a small in-memory tree with the rules containerd's
// go-erofs Apply (containerd PR #13589, through continuity's tarconv) follows, and the tree is
// handed to CopyFrom:
//   - a later entry replaces an earlier one at the same path (a directory over a directory
//     only updates its attributes and keeps the children);
//   - missing parents are made as 0755 root:root directories;
//   - a hard link's own header attributes are ignored (the inode is its target's);
//   - PAX SCHILY.xattr.* records become xattrs; other entry types are skipped;
//   - whiteouts: kept as .wh. files for the library's Merge, or (one layer) turned into
//     overlayfs whiteouts: .wh.<name> -> a 0:0 character device <name> of mode 0 and the
//     whiteout's mtime, .wh..wh..opq -> trusted.overlay.opaque=y on its directory.
// What cannot be said through v0.3.1's API: a hard link is written as an independent copy of
// its target (registered as the quirk go-erofs-hardlink-copied).

const (
	whPrefix  = ".wh."
	whOpaque  = ".wh..wh..opq"
	opaqueKey = "trusted.overlay.opaque"
	originKey = "trusted.overlay.origin"
	xattrPAX  = "SCHILY.xattr."
)

type node struct {
	name     string
	mode     fs.FileMode // Go type bits + permission and special bits
	uid, gid uint32
	mtime    time.Time
	xattrs   map[string]string
	off      int64 // a regular file's content: size bytes at off in the tree's spool
	size     int64
	target   string // symlink target
	rdev     uint32
	children map[string]*node
}

func newDir(name string) *node {
	return &node{name: name, mode: fs.ModeDir | 0o755, children: map[string]*node{}}
}

// layerTree is one layer as an fs.FS (with ReadLink) for erofs.Writer.CopyFrom. File
// contents go to a spool file, not memory: layers can be gigabytes.
type layerTree struct {
	root  *node
	spool *os.File
	end   int64
}

// readLayer replays the tar at p into a tree; overlay says whether whiteouts become overlayfs
// whiteouts (one layer) or stay .wh. files (for the library's Merge). The spool lives in dir
// (already unlinked); close the tree when done.
func readLayer(p, dir string, overlay bool) (*layerTree, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	spool, err := os.CreateTemp(dir, ".layerconf-goerofs-spool-")
	if err != nil {
		return nil, err
	}
	os.Remove(spool.Name())
	t := &layerTree{root: newDir("."), spool: spool}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return t, nil
		}
		if err != nil {
			t.Close()
			return nil, fmt.Errorf("reading the layer tar: %w", err)
		}
		if err := t.add(h, tr, overlay); err != nil {
			t.Close()
			return nil, fmt.Errorf("%s: %w", h.Name, err)
		}
	}
}

// parts splits a tar name into cleaned path components ("" for the root).
func parts(name string) []string {
	c := path.Clean("/" + name)
	if c == "/" {
		return nil
	}
	return strings.Split(c[1:], "/")
}

// dir returns the directory at comps, making missing (or replacing non-directory) parents.
func (t *layerTree) dir(comps []string) *node {
	d := t.root
	for _, c := range comps {
		n, ok := d.children[c]
		if !ok || !n.mode.IsDir() {
			n = newDir(c)
			d.children[c] = n
		}
		d = n
	}
	return d
}

func (t *layerTree) lookup(comps []string) *node {
	n := t.root
	for _, c := range comps {
		if n.children == nil {
			return nil
		}
		if n = n.children[c]; n == nil {
			return nil
		}
	}
	return n
}

func (t *layerTree) add(h *tar.Header, r io.Reader, overlay bool) error {
	comps := parts(h.Name)
	if len(comps) == 0 { // the root directory's own entry
		if h.Typeflag == tar.TypeDir {
			setAttrs(t.root, h)
		}
		return nil
	}
	parent, base := t.dir(comps[:len(comps)-1]), comps[len(comps)-1]
	if overlay && strings.HasPrefix(base, whPrefix) {
		if base == whOpaque {
			if parent.xattrs == nil {
				parent.xattrs = map[string]string{}
			}
			parent.xattrs[opaqueKey] = "y"
			return nil
		}
		name := base[len(whPrefix):]
		if name == "" { // a bare ".wh.": containerd's go-erofs Apply whiteouts the directory
			if len(comps) == 1 {
				return errors.New("a whiteout of the root directory cannot be written")
			}
			parent = t.dir(comps[:len(comps)-2])
			name = comps[len(comps)-2]
		}
		parent.children[name] = &node{name: name, mode: fs.ModeDevice | fs.ModeCharDevice,
			mtime: h.ModTime}
		// overlayfs lists a lower-only directory as it is unless it is marked as holding
		// whiteouts; mkfs.erofs --aufs and containerd's go-erofs Apply mark it with an empty
		// origin, without which the whiteout shows as an entry that cannot be looked up.
		if parent.xattrs == nil {
			parent.xattrs = map[string]string{}
		}
		parent.xattrs[originKey] = ""
		return nil
	}
	n := &node{name: base}
	switch h.Typeflag {
	case tar.TypeDir:
		if old, ok := parent.children[base]; ok && old.mode.IsDir() {
			setAttrs(old, h)
			return nil
		}
		n.mode, n.children = fs.ModeDir, map[string]*node{}
	case tar.TypeReg, tar.TypeRegA: //nolint:staticcheck // old tars still use '\x00'
		size, err := io.Copy(io.NewOffsetWriter(t.spool, t.end), r)
		if err != nil {
			return err
		}
		n.off, n.size = t.end, size
		t.end += size
	case tar.TypeSymlink:
		n.mode, n.target = fs.ModeSymlink, h.Linkname
	case tar.TypeChar:
		n.mode, n.rdev = fs.ModeDevice|fs.ModeCharDevice, mkdev(h.Devmajor, h.Devminor)
	case tar.TypeBlock:
		n.mode, n.rdev = fs.ModeDevice, mkdev(h.Devmajor, h.Devminor)
	case tar.TypeFifo:
		n.mode = fs.ModeNamedPipe
	case tar.TypeLink:
		old := t.lookup(parts(h.Linkname))
		if old == nil {
			return fmt.Errorf("hard link target %q not found", h.Linkname)
		}
		if old.mode.IsDir() {
			return fmt.Errorf("hard link to the directory %q", h.Linkname)
		}
		cp := *old // v0.3.1 has no Writer.Link: an independent copy with the target's attributes
		cp.name = base
		parent.children[base] = &cp
		return nil
	default:
		return nil
	}
	setAttrs(n, h)
	parent.children[base] = n
	return nil
}

// setAttrs applies a header's permission and special bits, owner, mtime and xattrs.
func setAttrs(n *node, h *tar.Header) {
	m := fs.FileMode(h.Mode & 0o777)
	for bit, flag := range map[int64]fs.FileMode{0o4000: fs.ModeSetuid, 0o2000: fs.ModeSetgid,
		0o1000: fs.ModeSticky} {
		if h.Mode&bit != 0 {
			m |= flag
		}
	}
	n.mode = n.mode.Type() | m
	n.uid, n.gid = uint32(h.Uid), uint32(h.Gid)
	if !h.ModTime.IsZero() {
		n.mtime = h.ModTime
	}
	for k, v := range h.PAXRecords {
		if strings.HasPrefix(k, xattrPAX) {
			if n.xattrs == nil {
				n.xattrs = map[string]string{}
			}
			n.xattrs[k[len(xattrPAX):]] = v
		}
	}
}

// mkdev is Linux's new_encode_dev, the rdev layout EROFS stores.
func mkdev(major, minor int64) uint32 {
	return uint32(minor&0xff | (major&0xfff)<<8 | (minor&^0xff)<<12)
}

// -- fs.FS ----------------------------------------------------------------------------------

func (t *layerTree) find(name string) (*node, error) {
	// No fs.ValidPath: it refuses names that are not UTF-8, which layers may carry; the only
	// caller is CopyFrom's walk, with names this tree gave it.
	var comps []string
	if name != "." {
		comps = strings.Split(name, "/")
	}
	n := t.lookup(comps)
	if n == nil {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
	}
	return n, nil
}

func (t *layerTree) Open(name string) (fs.File, error) {
	n, err := t.find(name)
	if err != nil {
		return nil, err
	}
	return &openFile{n: n, r: io.NewSectionReader(t.spool, n.off, n.size)}, nil
}

func (t *layerTree) Stat(name string) (fs.FileInfo, error) {
	n, err := t.find(name)
	if err != nil {
		return nil, err
	}
	return info{n}, nil
}

func (t *layerTree) ReadDir(name string) ([]fs.DirEntry, error) {
	n, err := t.find(name)
	if err != nil {
		return nil, err
	}
	if !n.mode.IsDir() {
		return nil, &fs.PathError{Op: "readdir", Path: name, Err: errors.New("not a directory")}
	}
	return entries(n), nil
}

func (t *layerTree) ReadLink(name string) (string, error) {
	n, err := t.find(name)
	if err != nil {
		return "", err
	}
	return n.target, nil
}

func entries(n *node) []fs.DirEntry {
	out := make([]fs.DirEntry, 0, len(n.children))
	for _, c := range n.children {
		out = append(out, fs.FileInfoToDirEntry(info{c}))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name() < out[j].Name() })
	return out
}

func (t *layerTree) Close() error { return t.spool.Close() }

type openFile struct {
	n *node
	r *io.SectionReader
}

func (f *openFile) Stat() (fs.FileInfo, error) { return info{f.n}, nil }
func (f *openFile) Read(p []byte) (int, error) { return f.r.Read(p) }
func (f *openFile) Close() error               { return nil }
func (f *openFile) ReadDir(int) ([]fs.DirEntry, error) {
	return entries(f.n), nil
}

// info carries every attribute through Sys() as an *erofs.Stat, the one extended-metadata
// type of the library's public API that CopyFrom reads (owner, mtime, rdev, xattrs).
type info struct{ n *node }

func (i info) Name() string       { return i.n.name }
func (i info) Size() int64        { return i.n.size }
func (i info) Mode() fs.FileMode  { return i.n.mode }
func (i info) ModTime() time.Time { return i.n.mtime }
func (i info) IsDir() bool        { return i.n.mode.IsDir() }
func (i info) Sys() any {
	nlink := 1
	if i.n.mode.IsDir() {
		nlink = 2
	}
	var sec int64
	var nsec int
	if !i.n.mtime.IsZero() {
		sec, nsec = i.n.mtime.Unix(), i.n.mtime.Nanosecond()
	}
	return &erofs.Stat{Mode: i.n.mode, Size: i.n.size, Rdev: i.n.rdev,
		UID: i.n.uid, GID: i.n.gid, Mtime: uint64(sec), MtimeNs: uint32(nsec), Nlink: nlink,
		Xattrs: i.n.xattrs}
}
