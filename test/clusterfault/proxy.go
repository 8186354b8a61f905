package clusterfault

import (
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"time"
)

// Mode is what a Link does with the traffic it carries.
type Mode int

const (
	// Pass forwards everything (after the link's delay, if any).
	Pass Mode = iota
	// Drop holds everything: connections stay open and new ones are
	// accepted, but no byte goes through, as on a network that loses every
	// packet. TCP's retransmissions are what heals it: when the link
	// passes again, what was held goes through, in order.
	Drop
	// Cut closes every connection and each new one at once, as a peer
	// that answers with resets.
	Cut
)

func (m Mode) String() string {
	switch m {
	case Pass:
		return "pass"
	case Drop:
		return "drop"
	case Cut:
		return "cut"
	}
	return fmt.Sprintf("mode(%d)", int(m))
}

// Link is a TCP proxy from its own listener to one target address: the
// one-way route from one cluster node to another. Its mode and delay
// change while connections are open.
type Link struct {
	ln     net.Listener
	target string
	dialer net.Dialer

	mu    sync.Mutex
	mode  Mode
	delay time.Duration
	// changed is closed, and replaced, whenever mode or delay change:
	// what Drop holds waits on it.
	changed chan struct{}
	conns   map[net.Conn]struct{}
	closed  bool
	wg      sync.WaitGroup
}

// NewLink listens on listen and forwards to target, dialing from source
// (an IP; "" lets the system choose).
func NewLink(listen, target, source string) (*Link, error) {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("link to %s: listen: %w", target, err)
	}
	l := &Link{ln: ln, target: target, changed: make(chan struct{}), conns: map[net.Conn]struct{}{}}
	l.dialer.Timeout = 5 * time.Second
	if source != "" {
		l.dialer.LocalAddr = &net.TCPAddr{IP: net.ParseIP(source)}
	}
	l.wg.Add(1)
	go l.accept()
	return l, nil
}

// Addr is the address to connect to instead of the target.
func (l *Link) Addr() string { return l.ln.Addr().String() }

// Set changes the link's mode and the delay added to each chunk of data it
// forwards. Cut closes the open connections.
func (l *Link) Set(m Mode, delay time.Duration) {
	l.mu.Lock()
	l.mode, l.delay = m, delay
	close(l.changed)
	l.changed = make(chan struct{})
	var drop []net.Conn
	if m == Cut {
		for c := range l.conns {
			drop = append(drop, c)
		}
	}
	l.mu.Unlock()
	for _, c := range drop {
		c.Close()
	}
}

// Mode returns the link's mode.
func (l *Link) Mode() Mode {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.mode
}

// Close stops the link and closes its connections.
func (l *Link) Close() {
	l.mu.Lock()
	l.closed = true
	close(l.changed)
	l.changed = make(chan struct{})
	for c := range l.conns {
		c.Close()
	}
	l.mu.Unlock()
	l.ln.Close()
	l.wg.Wait()
}

// track registers c unless the link is closed or cut.
func (l *Link) track(c net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed || l.mode == Cut {
		return false
	}
	l.conns[c] = struct{}{}
	return true
}

func (l *Link) untrack(c net.Conn) {
	l.mu.Lock()
	delete(l.conns, c)
	l.mu.Unlock()
	c.Close()
}

func (l *Link) accept() {
	defer l.wg.Done()
	for {
		in, err := l.ln.Accept()
		if err != nil {
			return
		}
		if !l.track(in) {
			in.Close()
			continue
		}
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			defer l.untrack(in)
			// The dial waits while the link drops: a SYN that gets no
			// answer.
			if !l.gate() {
				return
			}
			out, err := l.dialer.Dial("tcp", l.target)
			if err != nil {
				return
			}
			if !l.track(out) {
				out.Close()
				return
			}
			defer l.untrack(out)
			done := make(chan struct{}, 2)
			go func() { l.pipe(out, in); done <- struct{}{} }()
			go func() { l.pipe(in, out); done <- struct{}{} }()
			<-done
			// One side ended: end both, as a connection does.
			in.Close()
			out.Close()
			<-done
		}()
	}
}

// gate waits while the link drops and reports whether data may go on
// (false once it is cut or closed). It applies the link's delay.
func (l *Link) gate() bool {
	for {
		l.mu.Lock()
		m, d, ch, closed := l.mode, l.delay, l.changed, l.closed
		l.mu.Unlock()
		if closed || m == Cut {
			return false
		}
		if m == Drop {
			<-ch
			continue
		}
		if d > 0 {
			t := time.NewTimer(d)
			select {
			case <-t.C:
			case <-ch:
				t.Stop()
				continue // the mode changed meanwhile: look again
			}
		}
		return true
	}
}

func (l *Link) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if !l.gate() {
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// Bypasses lists the established TCP connections to any of ports on
// 127.0.0.1 whose other end is not source: routes between nodes that do
// not go through a Link, which a partition would not cut. Linux only: it
// reads /proc/net/tcp.
func Bypasses(ports []int, source string) ([]string, error) {
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		return nil, fmt.Errorf("bypasses: %w", err)
	}
	want := map[string]bool{}
	for _, p := range ports {
		want[fmt.Sprintf("0100007F:%04X", p)] = true
	}
	src := net.ParseIP(source).To4()
	if src == nil {
		return nil, fmt.Errorf("bypasses: source %q is not an IPv4 address", source)
	}
	// /proc/net/tcp prints the address as the in-memory (little-endian)
	// 32-bit word.
	srcHex := fmt.Sprintf("%02X%02X%02X%02X", src[3], src[2], src[1], src[0])
	var out []string
	for i, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if i == 0 || len(f) < 4 || f[3] != "01" { // 01: ESTABLISHED
			continue
		}
		local, remote := f[1], f[2]
		if want[local] && !strings.HasPrefix(remote, srcHex+":") {
			out = append(out, local+" <- "+remote)
		}
	}
	return out, nil
}
