// Command layerconf-goerofs writes EROFS images from layer tars with github.com/erofs/go-erofs,
// the pure-Go EROFS writer containerd is moving to, as a second writer beside mkfs.erofs.
//
//	layerconf-goerofs version
//	layerconf-goerofs convert -o IMAGE TAR            one layer; whiteouts as overlayfs ones
//	layerconf-goerofs convert -o IMAGE --merge TAR... layers bottom first, merged into one tree
//
// It is its own module (not part of the per-containerd-version oracle) so that go-erofs is
// pinned once, whatever containerd version the oracle links. The tar reading is layerconf's
// wiring (go-erofs v0.3.1 reads no tars, see tree.go); the image is go-erofs' alone.
// Protocol: docs/oracle-protocol.md, "The go-erofs writer".
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
)

const module = "github.com/erofs/go-erofs"

func usage() {
	fmt.Fprintln(os.Stderr, "usage: layerconf-goerofs version | convert -o IMAGE [--merge] TAR...")
	os.Exit(2)
}

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	switch os.Args[1] {
	case "version":
		_ = json.NewEncoder(os.Stdout).Encode(map[string]string{
			"go_erofs": moduleVersion(), "go": runtime.Version()})
	case "convert":
		fl := flag.NewFlagSet("convert", flag.ContinueOnError)
		out := fl.String("o", "", "the EROFS image to write")
		merge := fl.Bool("merge", false, "merge the layers (bottom first) into one tree, whiteouts resolved")
		if err := fl.Parse(os.Args[2:]); err != nil || *out == "" || fl.NArg() == 0 ||
			(!*merge && fl.NArg() != 1) {
			usage()
		}
		if err := convertOrPanic(*out, fl.Args(), *merge); err != nil {
			os.Remove(*out)
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	default:
		usage()
	}
}

// convertOrPanic is convert with a panic inside go-erofs turned into an error (exit 1, not
// the runtime's exit 2, which would read as a usage error).
func convertOrPanic(out string, tars []string, merge bool) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	return convert(out, tars, merge)
}

// moduleVersion is the go-erofs version this binary links.
func moduleVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == module {
				if d.Replace != nil {
					return d.Replace.Version
				}
				return d.Version
			}
		}
	}
	return "unknown"
}
