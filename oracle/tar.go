package main

import (
	"archive/tar"
	"bytes"
	"fmt"
	"time"
)

// tarEntry is one header of the "tar" op. []byte fields arrive base64-encoded (encoding/json).
type tarEntry struct {
	Name      []byte            `json:"name"`
	Linkname  []byte            `json:"linkname"`
	Typeflag  string            `json:"typeflag"`
	Mode      int64             `json:"mode"`
	Uid       int               `json:"uid"`
	Gid       int               `json:"gid"`
	Size      int64             `json:"size"`
	Mtime     *int64            `json:"mtime"` // null/absent: zero time.Time
	MtimeNsec int64             `json:"mtime_nsec"`
	Atime     *int64            `json:"atime"`
	AtimeNsec int64             `json:"atime_nsec"`
	Ctime     *int64            `json:"ctime"`
	CtimeNsec int64             `json:"ctime_nsec"`
	Devmajor  int64             `json:"devmajor"`
	Devminor  int64             `json:"devminor"`
	Uname     []byte            `json:"uname"`
	Gname     []byte            `json:"gname"`
	Pax       map[string][]byte `json:"pax"`
	Format    string            `json:"format"`
	Content   []byte            `json:"content"`
}

var tarFormats = map[string]tar.Format{
	"": tar.FormatUnknown, "unknown": tar.FormatUnknown,
	"ustar": tar.FormatUSTAR, "pax": tar.FormatPAX, "gnu": tar.FormatGNU,
}

func unixTime(sec *int64, nsec int64) time.Time {
	if sec == nil {
		return time.Time{}
	}
	return time.Unix(*sec, nsec)
}

// header converts an entry to the tar.Header Go's writer receives.
func (e *tarEntry) header() (*tar.Header, error) {
	format, ok := tarFormats[e.Format]
	if !ok {
		return nil, fmt.Errorf("tar: unknown format %q", e.Format)
	}
	var typeflag byte
	switch len(e.Typeflag) {
	case 0: // NUL typeflag
	case 1:
		typeflag = e.Typeflag[0]
	default:
		return nil, fmt.Errorf("tar: typeflag %q is not one character", e.Typeflag)
	}
	h := &tar.Header{
		Typeflag:   typeflag,
		Name:       string(e.Name),
		Linkname:   string(e.Linkname),
		Size:       e.Size,
		Mode:       e.Mode,
		Uid:        e.Uid,
		Gid:        e.Gid,
		Uname:      string(e.Uname),
		Gname:      string(e.Gname),
		ModTime:    unixTime(e.Mtime, e.MtimeNsec),
		AccessTime: unixTime(e.Atime, e.AtimeNsec),
		ChangeTime: unixTime(e.Ctime, e.CtimeNsec),
		Devmajor:   e.Devmajor,
		Devminor:   e.Devminor,
		Format:     format,
	}
	if len(e.Pax) > 0 {
		h.PAXRecords = make(map[string]string, len(e.Pax))
		for k, v := range e.Pax {
			h.PAXRecords[k] = string(v)
		}
	}
	return h, nil
}

// opTar writes exactly these headers (and contents) with archive/tar, then Close.
func opTar(entries []tarEntry) (map[string]any, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for i := range entries {
		h, err := entries[i].header()
		if err != nil {
			return nil, err
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if len(entries[i].Content) > 0 {
			if _, err := tw.Write(entries[i].Content); err != nil {
				return nil, err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return map[string]any{"tar": buf.Bytes()}, nil // []byte marshals as base64
}
