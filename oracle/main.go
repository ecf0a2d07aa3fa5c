// Command layerconf-oracle is the ground truth of layerconf: it links containerd's EROFS
// snapshotter, EROFS differ, walking differ and local content store at a pinned containerd
// version, wires them together the way containerd does, and serves a JSON-lines protocol on
// stdin/stdout (docs/oracle-protocol.md). It implements no differ logic of its own.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/log"
)

// stringList is a repeatable string flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, " ") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

func usage() {
	fmt.Fprintln(os.Stderr, "usage: layerconf-oracle serve --root DIR [--mkfs-option OPT ...] [--ovl-option OPT ...] [--tar-index] [--log-level LEVEL]")
	fmt.Fprintln(os.Stderr, "       layerconf-oracle serve --root DAEMON-ROOT --address SOCKET [--log-level LEVEL]")
}

func main() {
	if len(os.Args) < 2 || os.Args[1] != "serve" {
		usage()
		os.Exit(2)
	}
	fl := flag.NewFlagSet("serve", flag.ContinueOnError)
	root := fl.String("root", "", "state directory (snapshotter root, content store, mount manager)")
	logLevel := fl.String("log-level", "info", "containerd log level (logs go to stderr)")
	var mkfsOpts, ovlOpts stringList
	fl.Var(&mkfsOpts, "mkfs-option", "extra mkfs.erofs argument for the erofs differ (repeatable; one argv element each)")
	tarIndex := fl.Bool("tar-index", false, "the erofs differ in tar-index mode (enable_tar_index, v2.2.0+)")
	fl.Var(&ovlOpts, "ovl-option", "extra overlayfs mount option for the erofs snapshotter (repeatable)")
	address := fl.String("address", "", "serve through the containerd daemon at this socket (the daemon path); --root is its root")
	if err := fl.Parse(os.Args[2:]); err != nil || *root == "" || fl.NArg() != 0 {
		usage()
		os.Exit(2)
	}
	if *address != "" && (len(mkfsOpts) > 0 || len(ovlOpts) > 0 || *tarIndex) {
		fmt.Fprintln(os.Stderr, "layerconf-oracle: with --address the daemon's config sets mkfs_options, enable_tar_index and ovl_mount_options")
		os.Exit(2)
	}

	// Protocol responses go to the real stdout only; anything else that prints to
	// os.Stdout (it should not) is diverted to stderr.
	out := os.Stdout
	os.Stdout = os.Stderr
	log.L.Logger.SetOutput(os.Stderr)
	if err := log.SetLevel(*logLevel); err != nil {
		fmt.Fprintln(os.Stderr, "layerconf-oracle:", err)
		os.Exit(2)
	}

	var srv *server
	var err error
	if *address != "" {
		srv, err = newDaemonServer(*root, *address, 30*time.Second)
	} else {
		srv, err = newServer(*root, mkfsOpts, ovlOpts, *tarIndex)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "layerconf-oracle: setup:", err)
		os.Exit(1)
	}
	os.Exit(serve(srv, os.Stdin, out))
}

// serve runs the request loop until stdin EOF, a "close" request or SIGTERM/SIGINT, then
// unmounts everything the oracle mounted. It returns the process exit code.
func serve(srv *server, in io.Reader, out io.Writer) int {
	var (
		mu       sync.Mutex // held while a request runs, and during shutdown
		shutOnce sync.Once
		code     = 0
	)
	shutdown := func(c int) {
		shutOnce.Do(func() {
			code = c
			srv.shutdown()
		})
	}

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		sig := <-sigs
		log.L.Infof("received %v, shutting down", sig)
		srv.cancel() // abort a running request (e.g. mkfs) ...
		locked := make(chan struct{})
		go func() { mu.Lock(); close(locked) }()
		select { // ... and wait a little for it to return before unmounting
		case <-locked:
		case <-time.After(10 * time.Second):
			log.L.Warn("request still running after 10s; cleaning up anyway")
		}
		shutdown(128 + int(sig.(syscall.Signal)))
		os.Exit(code)
	}()

	enc := json.NewEncoder(out)
	enc.SetEscapeHTML(false)
	r := bufio.NewReaderSize(in, 1<<20)
	for {
		line, err := r.ReadBytes('\n')
		if len(bytes.TrimSpace(line)) > 0 {
			mu.Lock()
			resp, done := handleLine(srv, line)
			if werr := enc.Encode(resp); werr != nil {
				log.L.WithError(werr).Error("cannot write response")
				done = true
			}
			if done {
				shutdown(0)
				return code
			}
			mu.Unlock()
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				log.L.WithError(err).Error("reading stdin")
			}
			mu.Lock()
			shutdown(0)
			return code
		}
	}
}

// handleLine decodes one request, dispatches it, and always returns a response; a panic in
// containerd code becomes an error response. done is true after "close".
func handleLine(srv *server, line []byte) (resp map[string]any, done bool) {
	var req request
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		resp := map[string]any{"ok": false, "error": "invalid request: " + err.Error()}
		var idOnly struct { // echo the id if the line is JSON at all
			ID json.RawMessage `json:"id"`
		}
		if json.Unmarshal(line, &idOnly) == nil && len(idOnly.ID) > 0 {
			resp["id"] = idOnly.ID
		}
		return resp, false
	}
	defer func() {
		if p := recover(); p != nil {
			fmt.Fprintf(os.Stderr, "layerconf-oracle: panic in %q: %v\n%s", req.Op, p, debug.Stack())
			resp, done = map[string]any{"ok": false, "error": fmt.Sprintf("panic: %v", p)}, false
		}
		if len(req.ID) > 0 {
			resp["id"] = req.ID
		}
	}()
	fields, err := srv.dispatch(&req)
	if err != nil {
		return map[string]any{"ok": false, "error": err.Error()}, false
	}
	if fields == nil {
		fields = map[string]any{}
	}
	fields["ok"] = true
	return fields, req.Op == "close"
}
