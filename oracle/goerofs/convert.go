package main

import (
	"fmt"
	"os"
	"path/filepath"

	erofs "github.com/erofs/go-erofs"
)

// convert writes the EROFS image of the layer tars at out.
//
// One layer (merge false): its whiteouts become overlayfs whiteouts, as mkfs.erofs --aufs and
// containerd's go-erofs Apply write them, so the image stacks under overlayfs like
// containerd's layer.erofs. Several layers (merge true): each is handed to the library's own
// merge (CopyFrom with erofs.Merge), which resolves AUFS whiteouts and opaque markers against
// the layers below, giving one flat tree.
func convert(out string, tars []string, merge bool) error {
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	defer f.Close()
	w := erofs.Create(f, erofs.WithTempDir(filepath.Dir(out)))
	for _, tarPath := range tars {
		t, err := readLayer(tarPath, filepath.Dir(out), !merge)
		if err != nil {
			return err
		}
		// go-erofs reads file contents at Close, not during CopyFrom: keep the spool open
		defer t.Close()
		if merge {
			err = w.CopyFrom(t, erofs.Merge())
		} else {
			err = w.CopyFrom(t)
		}
		if err != nil {
			return fmt.Errorf("go-erofs: %s: %w", tarPath, err)
		}
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("go-erofs: writing %s: %w", out, err)
	}
	return f.Close()
}
