package main

// Forwarding a tar-mode run to the host (harness/backends/mkfs_forward.py has the protocol):
// $LAYERCONF_MKFS_HOST names virtio-serial ports, comma separated (or unix:PATH, a socket the
// host side listens on: the tests' stand-in for a port); the first free one takes the request. A port that cannot be opened, a host that does not answer in time or refuses:
// the run stays local. Once the host accepted, stdin goes there and the run is the host's.

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

const (
	hostEnv       = "LAYERCONF_MKFS_HOST"
	magic         = "LCMF"
	headerLen     = 13
	maxPayload    = 1 << 20
	acceptTimeout = 30 * time.Second  // the host's first answer
	frameTimeout  = 900 * time.Second // any later frame: mkfs may run a while after stdin ended
	writeTimeout  = 60 * time.Second
)

// passedEnv: what the host's mkfs may see of ours (it reads SOURCE_DATE_EPOCH; locale for its
// messages). The host filters again.
var passedEnv = []string{"SOURCE_DATE_EPOCH", "LANG", "LANGUAGE", "TZ"}

// shortWithValue: mkfs.erofs's short options that take a value, which may be the next word.
const shortWithValue = "CELTUbdxz"

// tarStdinImage is the image path when argv is a tar-mode run reading its stdin: --tar,
// --tar=f or --tar=i, one positional argument (the image, an absolute path in an existing
// folder), no other argument naming a path. "" for anything else (runs locally).
func tarStdinImage(argv []string) string {
	tar, image := false, ""
	for i := 0; i < len(argv); i++ {
		a := argv[i]
		switch {
		case a == "--tar" || a == "--tar=f" || a == "--tar=i":
			tar = true
		case a == "--" || a == "-":
			return ""
		case len(a) == 2 && a[0] == '-' && strings.IndexByte(shortWithValue, a[1]) >= 0:
			if i+1 < len(argv) && strings.Contains(argv[i+1], "/") {
				return ""
			}
			i++ // its value
		case strings.HasPrefix(a, "-"):
			if strings.Contains(a, "/") {
				return ""
			}
		default:
			if image != "" {
				return ""
			}
			image = a
		}
	}
	if !tar || !filepath.IsAbs(image) {
		return ""
	}
	if st, err := os.Stat(filepath.Dir(image)); err != nil || !st.IsDir() {
		return ""
	}
	return image
}

type request struct {
	Argv     []string          `json:"argv"`
	Env      map[string]string `json:"env"`
	Real     string            `json:"real"`
	Image    string            `json:"image"`
	Combined bool              `json:"combined"`
}

type finished struct {
	ReturnCode int   `json:"returncode"`
	Fed        int64 `json:"fed"`
	EOF        bool  `json:"eof"`
	Image      bool  `json:"image"`
	Size       int64 `json:"size"`
}

type frame struct {
	kind    byte
	rid     uint32
	payload []byte
}

// conn is what a port is: an opened virtio-serial port (*os.File) or a unix socket.
type conn interface {
	io.ReadWriteCloser
	SetReadDeadline(time.Time) error
	SetWriteDeadline(time.Time) error
}

// port is one opened port with deadlines on every read and write.
type port struct {
	f   conn
	buf []byte
}

func writeFrame(w io.Writer, kind byte, rid uint32, payload []byte) error {
	b := make([]byte, headerLen+len(payload))
	copy(b, magic)
	b[4] = kind
	binary.BigEndian.PutUint32(b[5:], rid)
	binary.BigEndian.PutUint32(b[9:], uint32(len(payload)))
	copy(b[headerLen:], payload)
	_, err := w.Write(b)
	return err
}

func (p *port) send(kind byte, rid uint32, payload []byte) error {
	p.f.SetWriteDeadline(time.Now().Add(writeTimeout))
	return writeFrame(p.f, kind, rid, payload)
}

// next is the next frame of request rid; others (a former request's) are skipped, garbage
// before a magic too.
func (p *port) next(rid uint32, timeout time.Duration) (frame, error) {
	deadline := time.Now().Add(timeout)
	p.f.SetReadDeadline(deadline)
	for {
		if fr, ok := parseFrame(&p.buf); ok {
			if fr.rid == rid {
				return fr, nil
			}
			continue
		}
		chunk := make([]byte, 256<<10)
		n, err := p.f.Read(chunk)
		p.buf = append(p.buf, chunk[:n]...)
		if err != nil && n == 0 {
			return frame{}, err
		}
		if n == 0 {
			return frame{}, io.EOF // the host is not connected
		}
	}
}

// parseFrame takes one whole frame off the front of *buf, dropping garbage before it.
func parseFrame(buf *[]byte) (frame, bool) {
	for {
		b := *buf
		i := bytes.Index(b, []byte(magic))
		if i < 0 {
			keep := len(magic) - 1
			if len(b) > keep {
				*buf = b[len(b)-keep:]
			}
			return frame{}, false
		}
		b = b[i:]
		*buf = b
		if len(b) < headerLen {
			return frame{}, false
		}
		n := binary.BigEndian.Uint32(b[9:])
		if n > maxPayload {
			*buf = b[1:]
			continue
		}
		if uint32(len(b)-headerLen) < n {
			return frame{}, false
		}
		fr := frame{kind: b[4], rid: binary.BigEndian.Uint32(b[5:]),
			payload: append([]byte(nil), b[headerLen:headerLen+int(n)]...)}
		*buf = b[headerLen+int(n):]
		return fr, true
	}
}

// openPort opens the first of the comma-separated ports not in use (a port is opened by one
// process at a time: EBUSY).
func openPort(list string) *port {
	for _, name := range strings.Split(list, ",") {
		if name == "" {
			continue
		}
		if path, ok := strings.CutPrefix(name, "unix:"); ok {
			if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
				return &port{f: c.(*net.UnixConn)}
			}
			continue
		}
		f, err := os.OpenFile(name, os.O_RDWR, 0)
		if err == nil {
			// deadlines need the poller; a file without it cannot be waited on safely
			if f.SetReadDeadline(time.Now().Add(time.Second)) == nil {
				return &port{f: f}
			}
			f.Close()
		}
	}
	return nil
}

func sameFile(a, b *os.File) bool {
	sa, ea := a.Stat()
	sb, eb := b.Stat()
	return ea == nil && eb == nil && os.SameFile(sa, sb)
}

// forward runs mkfs on the host; ok false when the host did not take the run (nothing of
// stdin was read: the caller runs mkfs itself).
func forward(ports, real string, argv []string, image string) (fed int64, eof bool, rc int, ok bool) {
	p := openPort(ports)
	if p == nil {
		return 0, false, 0, false
	}
	defer p.f.Close()
	rid := uint32(os.Getpid())<<16 ^ uint32(time.Now().UnixNano())
	env := map[string]string{}
	for _, k := range passedEnv {
		if v, set := os.LookupEnv(k); set {
			env[k] = v
		}
	}
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "LC_") {
			k, v, _ := strings.Cut(kv, "=")
			env[k] = v
		}
	}
	req, _ := json.Marshal(request{Argv: argv, Env: env, Real: real, Image: image,
		Combined: sameFile(os.Stdout, os.Stderr)})
	if p.send('R', rid, req) != nil {
		return 0, false, 0, false
	}
	var credit int64
	for {
		fr, err := p.next(rid, acceptTimeout)
		if err != nil {
			p.send('X', rid, nil)
			return 0, false, 0, false
		}
		if fr.kind == 'N' {
			return 0, false, 0, false
		}
		if fr.kind == 'A' {
			var a struct{ Credit int64 }
			json.Unmarshal(fr.payload, &a)
			credit = a.Credit
			break
		}
	}
	res, err := p.serve(rid, credit, image)
	if err != nil {
		p.send('X', rid, nil)
		fmt.Fprintf(os.Stderr, "mkfs.erofs (layerconf recording shim): the host's mkfs.erofs run failed: %v\n", err)
		return res.Fed, false, 127, true
	}
	return res.Fed, res.EOF, res.ReturnCode, true
}

// serve sends stdin as the host grants credit and writes what comes back, until 'F'.
func (p *port) serve(rid uint32, credit int64, image string) (finished, error) {
	var res finished
	grant := make(chan int64, 1024)
	stop := make(chan struct{})
	sendErr := make(chan error, 1)
	grant <- credit
	go func() { // stdin to the host, never more than the credit
		sendErr <- p.pump(rid, grant, stop)
	}()
	defer close(stop)
	var img *os.File
	defer func() {
		if img != nil {
			img.Close()
		}
	}()
	openImage := func() error {
		if img == nil {
			var err error
			// mkfs.erofs's own open: 0644 under the umask, an existing file truncated
			img, err = os.OpenFile(image, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
			return err
		}
		return nil
	}
	stopped := false
	for {
		fr, err := p.next(rid, frameTimeout)
		if err != nil {
			return res, fmt.Errorf("waiting for the host: %v", err)
		}
		switch fr.kind {
		case 'C':
			if len(fr.payload) == 4 && !stopped {
				grant <- int64(binary.BigEndian.Uint32(fr.payload))
			}
		case 'S':
			if !stopped { // mkfs stopped reading: so do we (containerd then meets EPIPE)
				stopped = true
				close(grant)
			}
		case '1':
			os.Stdout.Write(fr.payload)
		case '2':
			os.Stderr.Write(fr.payload)
		case 'I': // offset, bytes: a sparse image keeps its holes
			if len(fr.payload) < 8 {
				return res, fmt.Errorf("short image frame")
			}
			if err := openImage(); err != nil {
				return res, err
			}
			off := int64(binary.BigEndian.Uint64(fr.payload))
			if _, err := img.WriteAt(fr.payload[8:], off); err != nil {
				return res, err
			}
		case 'F':
			if err := json.Unmarshal(fr.payload, &res); err != nil {
				return res, fmt.Errorf("bad answer: %v", err)
			}
			if res.Image {
				if err := openImage(); err != nil {
					return res, err
				}
				if err := img.Truncate(res.Size); err != nil {
					return res, err
				}
			}
			if img != nil {
				if err := img.Close(); err != nil {
					img = nil
					return res, err
				}
				img = nil
			}
			return res, nil
		}
		select {
		case err := <-sendErr:
			if err != nil {
				return res, err
			}
			sendErr = nil // done: a nil channel is never ready again
		default:
		}
	}
}

// pump reads stdin as far as the credit allows and sends it; 'E' at its end. It ends when the
// grant channel closes (mkfs stopped reading) or stop.
func (p *port) pump(rid uint32, grant chan int64, stop chan struct{}) error {
	var credit int64
	buf := make([]byte, chunk)
	for {
		for credit == 0 {
			select {
			case c, open := <-grant:
				if !open {
					return nil
				}
				credit += c
			case <-stop:
				return nil
			}
		}
		// take credit that arrived meanwhile without waiting
		for more := true; more; {
			select {
			case c, open := <-grant:
				if !open {
					return nil
				}
				credit += c
			default:
				more = false
			}
		}
		n := int64(len(buf))
		if credit < n {
			n = credit
		}
		got, rerr := os.Stdin.Read(buf[:n])
		if got > 0 {
			if err := p.send('D', rid, buf[:got]); err != nil {
				return err
			}
			credit -= int64(got)
		}
		if rerr != nil { // the end of the stream; "!": it broke (eof false, as locally)
			var why []byte
			if !errors.Is(rerr, io.EOF) {
				why = []byte("!")
			}
			return p.send('E', rid, why)
		}
	}
}
