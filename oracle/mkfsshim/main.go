// Command layerconf-mkfs-shim is the recording mkfs.erofs put first on the oracle's PATH (see
// harness/mkfs_shim.py, which installs it and reads its log). It runs the real mkfs.erofs
// ($LAYERCONF_MKFS_REAL) with the same argv, passes stdin on to it, and appends one JSON line
// to $LAYERCONF_MKFS_LOG:
//
//	{"argv": [...], "fed": N, "eof": true|false, "returncode": R, "seconds": S, "end": T}
//
// fed: the stdin bytes mkfs took; eof: containerd's stream ended before mkfs stopped reading;
// returncode: mkfs's exit status, or minus the signal that killed it; seconds: mkfs's run;
// end: wall time (Unix seconds) when it was over.
//
// It holds at most one chunk and stops reading when mkfs closes its stdin, so containerd
// meets EPIPE as it would without the shim. With $LAYERCONF_MKFS_HOST (in a VM guest) a
// tar-mode run reading stdin goes to the host instead (forward.go), with the same semantics
// and the same log line. Compiled rather than a script because under a
// software-emulated guest every interpreter start and every byte an interpreter moves costs
// tens of times what it costs natively. Standard library only.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"runtime"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

const (
	realEnv = "LAYERCONF_MKFS_REAL"
	logEnv  = "LAYERCONF_MKFS_LOG"
	chunk   = 32 << 10
	// how long a stream may take to end once mkfs exited, before the shim stops waiting
	exitGrace = time.Second
)

type record struct {
	Argv       []string `json:"argv"`
	Fed        int64    `json:"fed"`
	EOF        bool     `json:"eof"`
	ReturnCode int      `json:"returncode"`
	Seconds    float64  `json:"seconds"`
	End        float64  `json:"end"`
}

func main() {
	// mkfs gets SIGKILL when the thread that started it ends (PR_SET_PDEATHSIG is per thread):
	// keeping main on its own thread makes that "when the shim ends".
	runtime.LockOSThread()
	real := os.Getenv(realEnv)
	if real == "" {
		fmt.Fprintf(os.Stderr, "mkfs.erofs (layerconf recording shim): %s is not set\n", realEnv)
		os.Exit(2)
	}
	logPath := os.Getenv(logEnv)
	started := time.Now()
	var fed int64
	var eof, forwarded bool
	var rc int
	if ports := os.Getenv(hostEnv); ports != "" {
		if image := tarStdinImage(os.Args[1:]); image != "" {
			fed, eof, rc, forwarded = forward(ports, real, os.Args[1:], image)
		}
	}
	if !forwarded {
		fed, eof, rc = runLocally(real)
	}
	if logPath != "" {
		rec := record{Argv: os.Args[1:], Fed: fed, EOF: eof, ReturnCode: rc,
			Seconds: math.Round(time.Since(started).Seconds()*1e4) / 1e4,
			End:     float64(time.Now().UnixNano()) / 1e9}
		if err := appendLine(logPath, rec); err != nil {
			fmt.Fprintf(os.Stderr, "mkfs.erofs (layerconf recording shim): %v\n", err)
		}
	}
	if rc < 0 {
		dieOf(syscall.Signal(-rc))
	}
	os.Exit(rc)
}

// runLocally runs the real mkfs here, stdin fed through.
func runLocally(real string) (fed int64, eof bool, rc int) {
	env := make([]string, 0, len(os.Environ()))
	for _, kv := range os.Environ() {
		if !hasKey(kv, realEnv) && !hasKey(kv, logEnv) && !hasKey(kv, hostEnv) {
			env = append(env, kv)
		}
	}
	// argv[0] as containerd gives it (exec.Command("mkfs.erofs")): mkfs quotes it in its errors.
	cmd := &exec.Cmd{Path: real, Args: append([]string{"mkfs.erofs"}, os.Args[1:]...), Env: env,
		Stdout: os.Stdout, Stderr: os.Stderr,
		SysProcAttr: &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}}
	sink, err := cmd.StdinPipe()
	if err == nil {
		err = cmd.Start()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "mkfs.erofs (layerconf recording shim): cannot run %s: %v\n", real, err)
		os.Exit(127)
	}
	var took atomic.Int64
	fedDone := make(chan bool, 1)
	go func() {
		whole := feed(sink, os.Stdin, &took)
		sink.Close()
		fedDone <- whole
	}()
	rc = exitStatus(cmd.Wait(), cmd.ProcessState)
	// mkfs is gone: a stdin that never ends (a run that does not read it, the caller's
	// terminal) no longer keeps us; a stream that was ending gets its moment to end
	select {
	case eof = <-fedDone:
	case <-time.After(exitGrace):
	}
	return took.Load(), eof, rc
}

func hasKey(kv, key string) bool {
	return len(kv) > len(key) && kv[:len(key)] == key && kv[len(key)] == '='
}

// feed copies src to mkfs's stdin one chunk at a time until src ends (true) or mkfs stops
// reading (EPIPE, or any other write error); fed counts the bytes mkfs took.
func feed(sink io.Writer, src io.Reader, fed *atomic.Int64) bool {
	buf := make([]byte, chunk)
	for {
		n, rerr := src.Read(buf)
		if n > 0 {
			w, werr := sink.Write(buf[:n])
			fed.Add(int64(w))
			if werr != nil {
				return false
			}
		}
		if rerr != nil {
			return errors.Is(rerr, io.EOF)
		}
	}
}

// exitStatus is mkfs's exit code, or minus the signal that killed it (Python's convention,
// which the log has always used).
func exitStatus(err error, st *os.ProcessState) int {
	if st == nil {
		fmt.Fprintf(os.Stderr, "mkfs.erofs (layerconf recording shim): waiting for mkfs: %v\n", err)
		return 127
	}
	if ws, ok := st.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return -int(ws.Signal())
	}
	return st.ExitCode()
}

func appendLine(path string, rec record) error {
	line, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	// one write of the whole line: concurrent runs append whole records
	if _, err := f.Write(append(line, '\n')); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// dieOf ends the shim by the signal that ended mkfs, so the caller (Go's os/exec) reports
// "signal: ..." as it would without the shim. Go's runtime catches most signals itself, so the
// default action is put back with a raw rt_sigaction (an all-zero struct is SIG_DFL, no flags,
// no mask, whatever the architecture's layout) before raising it.
func dieOf(sig syscall.Signal) {
	var act [4]uint64
	syscall.RawSyscall6(syscall.SYS_RT_SIGACTION, uintptr(sig), uintptr(unsafe.Pointer(&act)), 0, 8, 0, 0)
	syscall.Kill(os.Getpid(), sig)
	time.Sleep(time.Second) // a signal whose default is to be ignored (SIGCHLD...) lands here
	os.Exit(128 + int(sig))
}
