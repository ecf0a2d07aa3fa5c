// Command gotarwrite writes a directory tree as a tar with Go's archive/tar
// Writer, the way Go image tools do: one header per entry from
// tar.FileInfoHeader, the Writer choosing the format (USTAR, PAX or GNU) and
// its default precision (mtimes rounded to the second, no atime or ctime), xattrs as
// SCHILY.xattr PAX records, hardlinks by device and inode, numeric owners
// only. Names are relative to the root, directories end in "/", the root
// itself is not written. Entries are written in lexical order (WalkDir).
//
// Usage: gotarwrite ROOT OUT
package main

import (
	"archive/tar"
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

type inode struct{ dev, ino uint64 }

func xattrs(path string) (map[string]string, error) {
	size, err := syscall.Listxattr(path, nil)
	if err != nil || size == 0 {
		if errors.Is(err, syscall.ENOTSUP) {
			return nil, nil
		}
		return nil, err
	}
	buf := make([]byte, size)
	size, err = syscall.Listxattr(path, buf)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, name := range strings.Split(strings.TrimRight(string(buf[:size]), "\x00"), "\x00") {
		n, err := syscall.Getxattr(path, name, nil)
		if err != nil {
			return nil, fmt.Errorf("getxattr %s %s: %w", path, name, err)
		}
		val := make([]byte, n)
		if n, err = syscall.Getxattr(path, name, val); err != nil {
			return nil, fmt.Errorf("getxattr %s %s: %w", path, name, err)
		}
		out[name] = string(val[:n])
	}
	return out, nil
}

func write(root string, tw *tar.Writer) error {
	seen := map[inode]string{}
	return filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, path)
		if err != nil || rel == "." {
			return err
		}
		fi, err := os.Lstat(path)
		if err != nil {
			return err
		}
		link := ""
		if fi.Mode()&fs.ModeSymlink != 0 {
			if link, err = os.Readlink(path); err != nil {
				return err
			}
		}
		hdr, err := tar.FileInfoHeader(fi, link)
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		hdr.Name = filepath.ToSlash(rel)
		if fi.IsDir() {
			hdr.Name += "/"
		}
		hdr.Uname, hdr.Gname = "", "" // the host's user names are not the tree's
		st := fi.Sys().(*syscall.Stat_t)
		if fi.Mode().IsRegular() && st.Nlink > 1 {
			key := inode{uint64(st.Dev), st.Ino}
			if first, ok := seen[key]; ok {
				hdr.Typeflag, hdr.Linkname, hdr.Size = tar.TypeLink, first, 0
			} else {
				seen[key] = hdr.Name
			}
		}
		var xa map[string]string
		if link == "" { // syscall's Listxattr follows symlinks (no l-variant in the stdlib)
			if xa, err = xattrs(path); err != nil {
				return err
			}
		}
		for k, v := range xa {
			if hdr.PAXRecords == nil {
				hdr.PAXRecords = map[string]string{}
			}
			hdr.PAXRecords["SCHILY.xattr."+k] = v
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		if hdr.Typeflag != tar.TypeReg || hdr.Size == 0 {
			return nil
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.Copy(tw, f)
		return err
	})
}

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: gotarwrite ROOT OUT")
		os.Exit(2)
	}
	out, err := os.Create(os.Args[2])
	if err == nil {
		bw := bufio.NewWriterSize(out, 1<<20)
		tw := tar.NewWriter(bw)
		if err = write(os.Args[1], tw); err == nil {
			if err = tw.Close(); err == nil {
				err = bw.Flush()
			}
		}
		if cerr := out.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "gotarwrite:", err)
		os.Exit(1)
	}
}
