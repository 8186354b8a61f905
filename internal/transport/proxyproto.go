package transport

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// PROXY protocol, versions 1 and 2:
// https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt

// DefaultProxyHeaderTimeout is ProxyListener.HeaderTimeout's default.
const DefaultProxyHeaderTimeout = 5 * time.Second

const (
	maxV1Len   = 107 // "PROXY TCP6 <39> <39> <5> <5>\r\n"
	v2HdrLen   = 16  // signature, version/command, family, length
	maxAddrLen = 216 // AF_UNIX: two 108-byte paths
)

var v2Sig = []byte("\r\n\r\n\x00\r\nQUIT\n")

// Errors returned by ReadProxyHeader and by the conns of a ProxyListener;
// they are wrapped with details.
var (
	ErrNoProxyHeader        = errors.New("proxyproto: no PROXY header from a trusted peer")
	ErrProxyHeader          = errors.New("proxyproto: invalid PROXY header")
	ErrUntrustedProxyHeader = errors.New("proxyproto: PROXY header from an untrusted peer")
)

// ReadProxyHeader reads a PROXY protocol v1 or v2 header from r and returns
// the source and destination addresses it carries, as *net.TCPAddr. It
// returns nil addresses, and no error, when the header says the real
// connection's addresses apply: v1 UNKNOWN, v2 LOCAL (health checks), v2
// UNSPEC, UDP or UNIX families. It reads no byte past the header (whatever r
// buffered stays in r) and allocates nothing on lengths the peer declares: a
// v1 line is at most 107 bytes, v2 TLVs (at most 65535 bytes, per the 16-bit
// length) are discarded, unparsed.
func ReadProxyHeader(r *bufio.Reader) (src, dst net.Addr, err error) {
	b, err := r.Peek(1)
	if err != nil {
		if err == io.EOF {
			return nil, nil, fmt.Errorf("%w: connection closed", ErrNoProxyHeader)
		}
		return nil, nil, fmt.Errorf("proxyproto: read header: %w", err)
	}
	switch b[0] {
	case 'P':
		return readProxyV1(r)
	case '\r':
		return readProxyV2(r)
	}
	return nil, nil, fmt.Errorf("%w: first byte %#x", ErrNoProxyHeader, b[0])
}

func readProxyV1(r *bufio.Reader) (src, dst net.Addr, err error) {
	var buf [maxV1Len]byte
	n := 0
	for {
		if n == len(buf) {
			return nil, nil, fmt.Errorf("%w: v1 line longer than %d bytes", ErrProxyHeader, maxV1Len)
		}
		c, err := r.ReadByte()
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, nil, fmt.Errorf("proxyproto: read v1 header: %w", err)
		}
		buf[n] = c
		n++
		if n == 6 && string(buf[:6]) != "PROXY " {
			return nil, nil, fmt.Errorf("%w: starts with %q", ErrNoProxyHeader, buf[:6])
		}
		if c == '\n' {
			break
		}
	}
	if n < 2 || buf[n-2] != '\r' {
		return nil, nil, fmt.Errorf("%w: v1 line does not end with CRLF", ErrProxyHeader)
	}
	fields := strings.Split(string(buf[:n-2]), " ")
	if len(fields) < 2 {
		return nil, nil, fmt.Errorf("%w: v1 line %q", ErrProxyHeader, buf[:n-2])
	}
	var is4 bool
	switch fields[1] {
	case "UNKNOWN":
		return nil, nil, nil // the rest of the line is to be ignored
	case "TCP4":
		is4 = true
	case "TCP6":
	default:
		return nil, nil, fmt.Errorf("%w: v1 protocol %q", ErrProxyHeader, fields[1])
	}
	if len(fields) != 6 {
		return nil, nil, fmt.Errorf("%w: v1 line %q", ErrProxyHeader, buf[:n-2])
	}
	var ap [2]netip.AddrPort
	for i := range ap {
		a, err := netip.ParseAddr(fields[2+i])
		if err != nil || a.Zone() != "" || (is4 && !a.Is4()) || (!is4 && !a.Is6()) {
			return nil, nil, fmt.Errorf("%w: v1 %s address %q", ErrProxyHeader, fields[1], fields[2+i])
		}
		p, ok := parsePort(fields[4+i])
		if !ok {
			return nil, nil, fmt.Errorf("%w: v1 port %q", ErrProxyHeader, fields[4+i])
		}
		ap[i] = netip.AddrPortFrom(a.Unmap(), p)
	}
	return net.TCPAddrFromAddrPort(ap[0]), net.TCPAddrFromAddrPort(ap[1]), nil
}

// parsePort parses a decimal port without sign or leading zeros.
func parsePort(s string) (uint16, bool) {
	if s == "" || len(s) > 5 || (len(s) > 1 && s[0] == '0') || s[0] < '0' || s[0] > '9' {
		return 0, false
	}
	v, err := strconv.ParseUint(s, 10, 16)
	return uint16(v), err == nil
}

func readProxyV2(r *bufio.Reader) (src, dst net.Addr, err error) {
	var hdr [v2HdrLen]byte
	// Compare the signature before waiting for the whole header.
	if b, err := r.Peek(len(v2Sig)); err != nil || !bytes.Equal(b, v2Sig) {
		if err == nil || err == io.EOF {
			return nil, nil, fmt.Errorf("%w: bad v2 signature %q", ErrNoProxyHeader, b)
		}
		return nil, nil, fmt.Errorf("proxyproto: read v2 header: %w", err)
	}
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, nil, fmt.Errorf("proxyproto: read v2 header: %w", unexpected(err))
	}
	if v := hdr[12] >> 4; v != 2 {
		return nil, nil, fmt.Errorf("%w: v2 version %d", ErrProxyHeader, v)
	}
	cmd, fam := hdr[12]&0x0f, hdr[13]
	length := int(binary.BigEndian.Uint16(hdr[14:16]))
	if cmd > 1 {
		return nil, nil, fmt.Errorf("%w: v2 command %#x", ErrProxyHeader, cmd)
	}
	var addrLen int
	switch fam {
	case 0x00: // UNSPEC
	case 0x11, 0x12: // TCP4, UDP4
		addrLen = 12
	case 0x21, 0x22: // TCP6, UDP6
		addrLen = 36
	case 0x31, 0x32: // UNIX stream, dgram
		addrLen = maxAddrLen
	default:
		// "Receivers must drop connections presenting unexpected values."
		return nil, nil, fmt.Errorf("%w: v2 family %#x", ErrProxyHeader, fam)
	}
	if cmd == 0 { // LOCAL: the addresses of the connection itself apply.
		addrLen = 0
	}
	if length < addrLen {
		return nil, nil, fmt.Errorf("%w: v2 length %d shorter than the %d-byte address block", ErrProxyHeader, length, addrLen)
	}
	var ab [maxAddrLen]byte
	if _, err := io.ReadFull(r, ab[:addrLen]); err != nil {
		return nil, nil, fmt.Errorf("proxyproto: read v2 addresses: %w", unexpected(err))
	}
	// TLVs: skipped, never buffered.
	if _, err := r.Discard(length - addrLen); err != nil {
		return nil, nil, fmt.Errorf("proxyproto: read v2 TLVs: %w", unexpected(err))
	}
	if cmd == 0 {
		return nil, nil, nil
	}
	switch fam {
	case 0x11:
		s := netip.AddrFrom4([4]byte(ab[0:4]))
		d := netip.AddrFrom4([4]byte(ab[4:8]))
		return v2Addr(s, ab[8:10]), v2Addr(d, ab[10:12]), nil
	case 0x21:
		s := netip.AddrFrom16([16]byte(ab[0:16])).Unmap()
		d := netip.AddrFrom16([16]byte(ab[16:32])).Unmap()
		return v2Addr(s, ab[32:34]), v2Addr(d, ab[34:36]), nil
	}
	return nil, nil, nil // UNSPEC, UDP, UNIX: not ours to report
}

func v2Addr(a netip.Addr, port []byte) net.Addr {
	return net.TCPAddrFromAddrPort(netip.AddrPortFrom(a, binary.BigEndian.Uint16(port)))
}

func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// ProxyListener accepts connections from Listener and, for peers in
// Trusted, reads a PROXY v1 or v2 header. The header is read lazily, by the
// first Read or RemoteAddr of each conn (so in the connection's own
// goroutine, never in Accept), within HeaderTimeout.
//
//   - A trusted peer must send a header; its conn's RemoteAddr is then the
//     header's source (the real one for LOCAL and UNKNOWN headers).
//   - An untrusted peer that sends a header is rejected: it would be
//     claiming somebody else's address. Its other traffic passes unchanged.
//
// A rejected conn is closed, its Read returns the error (wrapping
// ErrNoProxyHeader, ErrProxyHeader or ErrUntrustedProxyHeader), and OnError
// is called with the peer's real address. LocalAddr stays the real local
// address. Set the fields before Accept is first called.
type ProxyListener struct {
	net.Listener
	// Trusted lists the proxies' addresses. Empty: nobody may send a header.
	Trusted []netip.Prefix
	// HeaderTimeout bounds reading the header from a trusted peer. Zero
	// means DefaultProxyHeaderTimeout.
	HeaderTimeout time.Duration
	// OnError, if set, is called, from the conn's goroutine, when a conn is
	// rejected; for logging.
	OnError func(remote net.Addr, err error)
}

// Accept returns the next connection without reading from it.
func (l *ProxyListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	pc := &proxyConn{Conn: c, l: l}
	if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		pc.trusted = isTrusted(ta.AddrPort().Addr().Unmap(), l.Trusted)
	}
	return pc, nil
}

var proxyReaderPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 256) }}

// proxyConn is a conn from a ProxyListener.
type proxyConn struct {
	net.Conn
	l       *ProxyListener
	trusted bool
	closed  atomic.Bool

	mu     sync.Mutex // header phase, pre
	done   atomic.Bool
	err    error // fatal header error
	br     *bufio.Reader
	src    net.Addr
	pre    []byte // read past the header
	hasPre atomic.Bool

	dlMu     sync.Mutex
	inHeader bool
	userRD   time.Time // read deadline the user set
	headerDL time.Time
}

func (c *proxyConn) Read(p []byte) (int, error) {
	if err := c.header(); err != nil {
		return 0, err
	}
	if c.hasPre.Load() {
		c.mu.Lock()
		n := copy(p, c.pre)
		c.pre = c.pre[n:]
		if len(c.pre) == 0 {
			c.pre = nil
			c.hasPre.Store(false)
		}
		c.mu.Unlock()
		if n > 0 {
			return n, nil
		}
	}
	return c.Conn.Read(p)
}

// RemoteAddr returns the source address from the PROXY header, reading the
// header first if needed (so it may block: call it from the conn's
// goroutine); otherwise the real peer's address.
func (c *proxyConn) RemoteAddr() net.Addr {
	if c.header() == nil && c.src != nil {
		return c.src
	}
	return c.Conn.RemoteAddr()
}

func (c *proxyConn) Close() error {
	c.closed.Store(true)
	return c.Conn.Close()
}

func (c *proxyConn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.Conn.SetWriteDeadline(t)
}

// SetReadDeadline applies t, or the header deadline if sooner while the
// header is being read.
func (c *proxyConn) SetReadDeadline(t time.Time) error {
	c.dlMu.Lock()
	defer c.dlMu.Unlock()
	c.userRD = t
	if c.inHeader {
		return c.Conn.SetReadDeadline(earliest(t, c.headerDL))
	}
	return c.Conn.SetReadDeadline(t)
}

func earliest(a, b time.Time) time.Time {
	if a.IsZero() || (!b.IsZero() && b.Before(a)) {
		return b
	}
	return a
}

func (c *proxyConn) setHeaderDeadline(on bool, d time.Duration) {
	c.dlMu.Lock()
	defer c.dlMu.Unlock()
	c.inHeader = on
	if on {
		c.headerDL = time.Now().Add(d)
		_ = c.Conn.SetReadDeadline(earliest(c.userRD, c.headerDL))
	} else {
		_ = c.Conn.SetReadDeadline(c.userRD)
	}
}

// header runs the header phase once; it returns the fatal error, if any, or
// a retryable one (a read deadline while checking an untrusted peer).
func (c *proxyConn) header() error {
	if c.done.Load() {
		return c.err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done.Load() {
		return c.err
	}
	if c.br == nil {
		c.br = proxyReaderPool.Get().(*bufio.Reader)
		c.br.Reset(c.Conn)
	}
	var err error
	if c.trusted {
		c.setHeaderDeadline(true, cmpOr(c.l.HeaderTimeout, DefaultProxyHeaderTimeout))
		c.src, _, err = ReadProxyHeader(c.br)
		c.setHeaderDeadline(false, 0)
	} else {
		err = checkNoProxyHeader(c.br)
		if err != nil && !errors.Is(err, ErrUntrustedProxyHeader) {
			return err // retryable: nothing was consumed
		}
	}
	if err != nil {
		c.err = fmt.Errorf("proxyproto: from %s: %w", c.Conn.RemoteAddr(), err)
		_ = c.Conn.Close()
		if c.l.OnError != nil && !c.closed.Load() {
			c.l.OnError(c.Conn.RemoteAddr(), c.err)
		}
	} else if n := c.br.Buffered(); n > 0 {
		b, _ := c.br.Peek(n)
		c.pre = append([]byte(nil), b...)
		c.hasPre.Store(true)
	}
	c.br.Reset(nil)
	proxyReaderPool.Put(c.br)
	c.br = nil
	c.done.Store(true)
	return c.err
}

// checkNoProxyHeader peeks at what an untrusted peer sends first: a PROXY
// header is an error, anything else (including EOF) is left for Read.
func checkNoProxyHeader(br *bufio.Reader) error {
	b, err := br.Peek(1)
	if err != nil {
		if err == io.EOF {
			return nil
		}
		return err
	}
	var sig []byte
	switch b[0] {
	case 'P':
		sig = []byte("PROXY ")
	case '\r':
		sig = v2Sig
	default:
		return nil
	}
	b, err = br.Peek(len(sig))
	if !bytes.HasPrefix(sig, b) || err == io.EOF {
		return nil // not a header, or too short to be one
	}
	if err != nil {
		return err
	}
	return ErrUntrustedProxyHeader
}

func cmpOr(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}
