package loadgen

import (
	"context"
	"net"
	"sync/atomic"
)

// connsPerSource is how many connections to one loopback broker address the
// tool opens from one source address before it uses the next. Linux's
// connect() picks an ephemeral port for the pair of addresses by trying the
// even half of ip_local_port_range first (14,116 ports by default) and then
// the odd half; once the even half is taken, every further connect() walks
// it whole under the port table's locks. Measured: the idle scenario opened
// 4-6k connections/s up to ~14,100 connections and 0.5-1k/s after, whatever
// the broker. Each source address has its own ports for the same
// destination, so 127.0.0.2, 127.0.0.3, ... (all loopback on Linux) keep the
// search short.
const connsPerSource = 10000

// sources spreads the dials of one dialer over loopback source addresses.
type sources struct {
	addrs []*net.TCPAddr
	next  atomic.Uint64
}

// newSources returns the source addresses for n connections to host: nil
// (the kernel's choice) unless host is an IPv4 loopback address, n is
// above connsPerSource, and the whole of 127.0.0.0/8 is local (Linux; other
// systems configure 127.0.0.1 alone) and k stays under 255 addresses.
func newSources(host string, n int) *sources {
	ip := net.ParseIP(host).To4()
	if !loopbackNet || ip == nil || !ip.IsLoopback() || n <= connsPerSource || n > 254*connsPerSource {
		return nil
	}
	k := (n + connsPerSource - 1) / connsPerSource
	s := &sources{}
	for i := range k {
		s.addrs = append(s.addrs, &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(1+i))})
	}
	return s
}

// dialer returns a net.Dialer from the next source address, the port left
// to connect() (IP_BIND_ADDRESS_NO_PORT: bind would reserve a port for
// every destination); a plain one when s is nil.
func (s *sources) dialer() *net.Dialer {
	nd := &net.Dialer{}
	if s != nil {
		nd.LocalAddr = s.addrs[s.next.Add(1)%uint64(len(s.addrs))]
		nd.Control = bindNoPort
	}
	return nd
}

func (s *sources) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	return s.dialer().DialContext(ctx, network, addr)
}
