//go:build !linux

package poll

import (
	"syscall"
	"time"
)

func park(syscall.RawConn, time.Time, func()) (*Waiter, bool) { return nil, false }

func (w *Waiter) unwatchLocked() {}

type poller struct{}

func pending(syscall.RawConn) bool { return true }

func wait(syscall.RawConn) error { return nil }

const supported = false
