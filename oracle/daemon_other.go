//go:build containerd_v21 || containerd_v22

package main

import (
	"context"
	"errors"
	"time"
)



var errNoDaemon = errors.New("the daemon path is built for containerd v2.3 and later only")

func newDaemonServer(string, string, time.Duration) (*server, error) { return nil, errNoDaemon }

func (s *server) daemonSnapshotDir(context.Context, string) (string, error) { return "", errNoDaemon }

func (s *server) daemonVersion() (map[string]string, error) { return nil, errNoDaemon }
