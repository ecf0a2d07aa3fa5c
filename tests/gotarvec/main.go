// Command gotarvec writes a tar archive with Go's archive/tar, for layerconf's
// differential tests of harness/reference/gotar.py.
//
// Stdin: a JSON list of headers. Byte fields (name, typeflag, linkname, uname,
// gname, content, pax values) are base64; times are integer nanoseconds since
// the Unix epoch (atime_ns/ctime_ns may be null = unset; -62135596800e9 is Go's
// zero time). For each entry: WriteHeader, then Write(content) if non-empty;
// finally Close. Stdout: the bytes written so far. On the first error the error
// text goes to stderr and the exit status is 1.
package main

import (
	"archive/tar"
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"math/big"
	"os"
	"time"
)

type entry struct {
	Name     []byte            `json:"name"`
	Typeflag []byte            `json:"typeflag"`
	Linkname []byte            `json:"linkname"`
	Size     int64             `json:"size"`
	Mode     int64             `json:"mode"`
	Uid      int               `json:"uid"`
	Gid      int               `json:"gid"`
	Uname    []byte            `json:"uname"`
	Gname    []byte            `json:"gname"`
	MtimeNs  json.Number       `json:"mtime_ns"`
	AtimeNs  *json.Number      `json:"atime_ns"`
	CtimeNs  *json.Number      `json:"ctime_ns"`
	Devmajor int64             `json:"devmajor"`
	Devminor int64             `json:"devminor"`
	Pax      map[string][]byte `json:"pax"`
	Format   int               `json:"format"`
	Content  []byte            `json:"content"`
}

var zeroNs = new(big.Int).Mul(big.NewInt(-62135596800), big.NewInt(1e9))

// toTime converts nanoseconds (arbitrary size) to a UTC time.Time.
func toTime(n *json.Number) time.Time {
	if n == nil {
		return time.Time{}
	}
	ns, ok := new(big.Int).SetString(n.String(), 10)
	if !ok {
		fail(fmt.Errorf("bad time %q", n.String()))
	}
	if ns.Cmp(zeroNs) == 0 {
		return time.Time{}
	}
	sec, nsec := new(big.Int).DivMod(ns, big.NewInt(1e9), new(big.Int)) // Euclidean: nsec >= 0
	return time.Unix(sec.Int64(), nsec.Int64()).UTC()
}

var out = bufio.NewWriter(os.Stdout)

func fail(err error) {
	out.Flush()
	fmt.Fprintln(os.Stderr, err)
	os.Exit(1)
}

func main() {
	dec := json.NewDecoder(os.Stdin)
	dec.UseNumber()
	var entries []entry
	if err := dec.Decode(&entries); err != nil {
		fmt.Fprintln(os.Stderr, "gotarvec: bad input:", err)
		os.Exit(2)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	defer out.Flush()
	for _, e := range entries {
		var typeflag byte = tar.TypeReg
		if len(e.Typeflag) > 0 {
			typeflag = e.Typeflag[0]
		}
		var pax map[string]string
		if len(e.Pax) > 0 {
			pax = make(map[string]string, len(e.Pax))
			for k, v := range e.Pax {
				pax[k] = string(v)
			}
		}
		mtime := e.MtimeNs
		hdr := &tar.Header{
			Typeflag: typeflag, Name: string(e.Name), Linkname: string(e.Linkname),
			Size: e.Size, Mode: e.Mode, Uid: e.Uid, Gid: e.Gid,
			Uname: string(e.Uname), Gname: string(e.Gname),
			ModTime: toTime(&mtime), AccessTime: toTime(e.AtimeNs), ChangeTime: toTime(e.CtimeNs),
			Devmajor: e.Devmajor, Devminor: e.Devminor,
			PAXRecords: pax, Format: tar.Format(e.Format),
		}
		err := tw.WriteHeader(hdr)
		if err == nil && len(e.Content) > 0 {
			_, err = tw.Write(e.Content)
		}
		if err != nil {
			out.Write(buf.Bytes())
			fail(err)
		}
	}
	err := tw.Close()
	out.Write(buf.Bytes())
	if err != nil {
		fail(err)
	}
}
