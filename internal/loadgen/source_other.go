//go:build !linux

package loadgen

import "syscall"

// loopbackNet: only 127.0.0.1 is configured by default here.
const loopbackNet = false

func bindNoPort(_, _ string, _ syscall.RawConn) error { return nil }
