//go:build !linux

package loadgen

import "syscall"

func bindNoPort(_, _ string, _ syscall.RawConn) error { return nil }
