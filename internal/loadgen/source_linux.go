package loadgen

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// loopbackNet: Linux routes the whole of 127.0.0.0/8 to lo.
const loopbackNet = true

func bindNoPort(_, _ string, rc syscall.RawConn) error {
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
	}); err != nil {
		return err
	}
	return serr
}
