// Command gotarread reads a tar archive on stdin with Go's archive/tar Reader,
// for layerconf's differential tests of harness/reference/tarread.py.
//
// Stdout: one JSON object {"entries": [...], "error": text|null, "error_index": i}.
// Every byte string (name, linkname, uname, gname, PAX keys and values, xattr
// names and values) is base64, because tar names need not be UTF-8. Times are
// [Unix seconds, nanoseconds] as time.Time reports them (the zero time is
// [-62135596800, 0]). For each header returned by Next the content is read
// with io.Copy (sparse holes come back as zeros) and its sha256 and length are
// recorded. error_index is the index of the entry whose Next or content read
// failed (len(entries) when Next failed); error is null at a clean io.EOF.
package main

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"os"
	"time"
)

type entry struct {
	Name          []byte            `json:"name"`
	Linkname      []byte            `json:"linkname"`
	Typeflag      byte              `json:"typeflag"`
	Size          int64             `json:"size"`
	Mode          int64             `json:"mode"`
	Uid           int               `json:"uid"`
	Gid           int               `json:"gid"`
	Uname         []byte            `json:"uname"`
	Gname         []byte            `json:"gname"`
	Mtime         [2]int64          `json:"mtime"`
	Atime         [2]int64          `json:"atime"`
	Ctime         [2]int64          `json:"ctime"`
	Devmajor      int64             `json:"devmajor"`
	Devminor      int64             `json:"devminor"`
	Xattrs        map[string][]byte `json:"xattrs"` // key: base64 of the name
	PAX           map[string][]byte `json:"pax"`    // key: base64 of the record key
	Format        int               `json:"format"`
	ContentSHA256 *string           `json:"content_sha256"`
	ContentLen    *int64            `json:"content_len"`
}

type result struct {
	Entries    []entry `json:"entries"`
	Error      *string `json:"error"`
	ErrorIndex int     `json:"error_index"`
}

func ts(t time.Time) [2]int64 { return [2]int64{t.Unix(), int64(t.Nanosecond())} }

func b64keys(m map[string]string) map[string][]byte {
	if m == nil {
		return nil
	}
	out := make(map[string][]byte, len(m))
	for k, v := range m {
		out[string(encodeKey(k))] = []byte(v)
	}
	return out
}

// encodeKey makes a map key JSON-safe (JSON object keys must be strings).
func encodeKey(k string) []byte {
	b, _ := json.Marshal([]byte(k)) // a quoted base64 string
	return b[1 : len(b)-1]
}

func main() {
	tr := tar.NewReader(os.Stdin)
	res := result{Entries: []entry{}}
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			s := err.Error()
			res.Error, res.ErrorIndex = &s, len(res.Entries)
			break
		}
		//lint:ignore SA1019 Xattrs is what the reader fills from SCHILY.xattr records
		e := entry{
			Name: []byte(hdr.Name), Linkname: []byte(hdr.Linkname), Typeflag: hdr.Typeflag,
			Size: hdr.Size, Mode: hdr.Mode, Uid: hdr.Uid, Gid: hdr.Gid,
			Uname: []byte(hdr.Uname), Gname: []byte(hdr.Gname),
			Mtime: ts(hdr.ModTime), Atime: ts(hdr.AccessTime), Ctime: ts(hdr.ChangeTime),
			Devmajor: hdr.Devmajor, Devminor: hdr.Devminor,
			Xattrs: b64keys(hdr.Xattrs), PAX: b64keys(hdr.PAXRecords), Format: int(hdr.Format),
		}
		h := sha256.New()
		n, err := io.Copy(h, tr)
		if err != nil {
			res.Entries = append(res.Entries, e)
			s := err.Error()
			res.Error, res.ErrorIndex = &s, len(res.Entries)-1
			break
		}
		sum := hex.EncodeToString(h.Sum(nil))
		e.ContentSHA256, e.ContentLen = &sum, &n
		res.Entries = append(res.Entries, e)
	}
	out, err := json.Marshal(res)
	if err != nil {
		os.Stderr.WriteString("gotarread: " + err.Error() + "\n")
		os.Exit(2)
	}
	os.Stdout.Write(append(out, '\n'))
}
