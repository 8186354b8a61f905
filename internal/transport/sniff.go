package transport

import (
	"bufio"
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"sync"
)

// What Sniff found a connection to carry.
const (
	SniffMQTT = "mqtt" // first byte 0x10: an MQTT CONNECT
	SniffTLS  = "tls"  // first byte 0x16: a TLS handshake record (ClientHello)
	SniffHTTP = "http" // anything else: HTTP, for WebSocket or the dashboard
)

// PeekConn is a net.Conn whose first bytes can be looked at without being
// consumed: Read returns them first.
type PeekConn struct {
	net.Conn
	r *bufio.Reader
}

// NewPeekConn wraps c; the buffer is small, only enough to look at a first
// byte.
func NewPeekConn(c net.Conn) *PeekConn {
	return &PeekConn{Conn: c, r: bufio.NewReaderSize(c, 16)}
}

// Read reads the peeked bytes first, then from the connection.
func (c *PeekConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// Peek returns the next n bytes without consuming them.
func (c *PeekConn) Peek(n int) ([]byte, error) { return c.r.Peek(n) }

// Sniff reads c's first byte (bounded by whatever deadline the caller set)
// and says what the connection carries; the returned conn reads that byte
// again. It is how a single-port listener dispatches: call it on the raw
// connection, and again on the TLS connection after a SniffTLS.
func Sniff(c net.Conn) (kind string, conn net.Conn, err error) {
	pc := NewPeekConn(c)
	conn = pc
	if _, ok := c.(interface{ ConnectionState() tls.ConnectionState }); ok {
		conn = &tlsPeekConn{pc} // still says it is TLS, with its certificates
	}
	b, err := pc.Peek(1)
	if err != nil {
		return "", conn, err
	}
	switch b[0] {
	case 0x10:
		return SniffMQTT, conn, nil
	case 0x16:
		return SniffTLS, conn, nil
	}
	return SniffHTTP, conn, nil
}

// tlsPeekConn is a PeekConn over a TLS connection, whose state it shows.
type tlsPeekConn struct{ *PeekConn }

func (c *tlsPeekConn) ConnectionState() tls.ConnectionState {
	return c.Conn.(interface{ ConnectionState() tls.ConnectionState }).ConnectionState()
}

// ConnListener is a net.Listener whose connections are handed to it (Put),
// for serving connections a single-port listener sniffed as HTTP with an
// http.Server.
type ConnListener struct {
	addr      net.Addr
	conns     chan net.Conn
	closeOnce sync.Once
	done      chan struct{}
}

// NewConnListener returns a listener that reports addr as its address.
func NewConnListener(addr net.Addr) *ConnListener {
	return &ConnListener{addr: addr, conns: make(chan net.Conn), done: make(chan struct{})}
}

// Put hands c to the next Accept; after Close it closes c instead.
func (l *ConnListener) Put(c net.Conn) {
	select {
	case l.conns <- c:
	case <-l.done:
		c.Close()
	}
}

// Accept returns the next connection given to Put, or net.ErrClosed after
// Close.
func (l *ConnListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close makes Accept return net.ErrClosed.
func (l *ConnListener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return nil
}

// Addr returns the address given to NewConnListener.
func (l *ConnListener) Addr() net.Addr { return l.addr }

type connTLSKey struct{}

// ConnTLSContext is an http.Server ConnContext that keeps a connection's
// TLS state provider (a sniffed TLS connection, which is not a *tls.Conn)
// for WithConnTLS.
func ConnTLSContext(ctx context.Context, c net.Conn) context.Context {
	if t, ok := c.(interface{ ConnectionState() tls.ConnectionState }); ok {
		if _, isTLS := c.(*tls.Conn); !isTLS { // net/http handles those itself
			return context.WithValue(ctx, connTLSKey{}, t)
		}
	}
	return ctx
}

// WithConnTLS sets r.TLS, when net/http left it nil, from the connection
// state ConnTLSContext kept, so that HTTP served inside a sniffed TLS
// connection is seen as HTTPS like on a TLS listener.
func WithConnTLS(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil {
			if t, ok := r.Context().Value(connTLSKey{}).(interface{ ConnectionState() tls.ConnectionState }); ok {
				st := t.ConnectionState()
				r.TLS = &st
			}
		}
		h.ServeHTTP(w, r)
	})
}
