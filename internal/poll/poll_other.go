//go:build !linux

package poll

import (
	"errors"
	"net"
	"syscall"
	"time"
)

func park(syscall.RawConn, time.Time, Callback) (*Waiter, bool) { return nil, false }

func parkFD(int, time.Time, Callback) (*Waiter, bool) { return nil, false }

func (w *Waiter) unwatchLocked() {}

func (w *Waiter) delLocked() {}

func (w *Waiter) addLocked() bool { return false }

func release(syscall.RawConn) (int, error) { return -1, errors.ErrUnsupported }

func reopen(int) (net.Conn, error) { return nil, errors.ErrUnsupported }

func ended(int) error { return nil }

func closeFD(int) {}

type poller struct{}

func pending(syscall.RawConn) bool { return true }

func wait(syscall.RawConn) error { return nil }

const supported = false
