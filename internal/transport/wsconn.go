package transport

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/gobwas/ws"
)

// closeFrameTimeout bounds how long Close waits to send its close frame (and
// for a Write blocked on a slow peer to give up) before it closes the socket.
const closeFrameTimeout = 2 * time.Second

// errCloseSent is returned by Write once a close frame has been sent.
var errCloseSent = fmt.Errorf("websocket: close frame sent: %w", net.ErrClosed)

// CloseError is the error Read returns after the adapter failed the
// connection because of what the peer sent: it has sent a close frame with
// Code (1002 protocol error, 1003 text frame, 1007 bad close reason) and the
// caller should Close the conn.
type CloseError struct {
	Code   uint16
	Reason string
}

func (e *CloseError) Error() string {
	return fmt.Sprintf("websocket: sent close %d: %s", e.Code, e.Reason)
}

// WSConn adapts a WebSocket to a net.Conn carrying a byte stream: Read
// returns the payload of binary frames, which need not align with MQTT
// packets [MQTT-6.0.0-2], and each Write is sent as one binary frame.
//
// Read and Write may be called concurrently, as for any net.Conn. Reads are
// serialized by one mutex, writes (data, pong, close) by another; the write
// mutex is never held while blocking on a read. The conn holds no payload
// buffer: data frames are read straight into the caller's slice and unmasked
// in place. Control frames (at most 125 bytes) are read into a short-lived
// buffer.
type WSConn struct {
	conn        net.Conn
	subprotocol string
	remote      net.Addr // nil: conn.RemoteAddr()
	token       []byte   // bearer token of the upgrade request (wstoken.go); nil: none
	origin      string   // Origin header of the upgrade request ("" from non-browser clients)
	path        string   // path of the upgrade request
	closed      atomic.Bool
	peerCode    atomic.Uint32 // close code the peer sent, 0 if none yet

	rmu       sync.Mutex
	pre       []byte // bytes read by the HTTP layer before the hijack
	rawN      int64  // bytes read from the peer so far
	hbuf      [ws.MaxHeaderSize - 2]byte
	state     ws.State
	client    bool  // client side: masks writes, expects unmasked reads (here, in padding)
	remaining int64 // unread payload bytes of the current data frame
	masked    bool
	mask      [4]byte
	maskPos   int
	rerr      error // sticky read error
	fin       bool  // the current data frame ends its message
	closeSent bool  // under wmu (beside the flags: WSConn stays in the 256-byte class)

	// permessage-deflate (wsdeflate.go): negotiated, and the state of the
	// compressed message being read, if any (pooled: an idle connection
	// holds none).
	deflate    bool
	inflating  bool
	maxInflate int64 // bound on a decompressed message; 0: none
	inf        *inflateState

	wmu  sync.Mutex
	werr error // sticky write error: a frame may be half written
}

// frameScratch is what writing a frame formats its header into and hands
// to writev, pooled rather than held by every connection.
type frameScratch struct {
	hdr  hdrBuf
	wv   [2][]byte
	bufs net.Buffers
}

var frameScratches = sync.Pool{New: func() any { return new(frameScratch) }}

func newWSConn(conn net.Conn, pre []byte, client bool, subprotocol string) *WSConn {
	c := &WSConn{conn: conn, pre: pre, client: client, subprotocol: subprotocol}
	if client {
		c.state = ws.StateClientSide
	} else {
		c.state = ws.StateServerSide
	}
	return c
}

// enableDeflate turns on permessage-deflate after a handshake that
// negotiated it; maxMessage bounds a decompressed message (0: no bound).
func (c *WSConn) enableDeflate(maxMessage int64) {
	c.deflate, c.maxInflate = true, maxMessage
	c.state = c.state.Set(ws.StateExtended) // RSV1 may be set
}

// Compressed reports whether permessage-deflate was negotiated.
func (c *WSConn) Compressed() bool { return c.deflate }

// hdrBuf receives a frame header from ws.WriteHeaderBuffer, which formats it
// into b itself and then writes that same slice: only the length is kept.
type hdrBuf struct {
	b [ws.MaxHeaderSize]byte
	n int
}

func (h *hdrBuf) Write(p []byte) (int, error) {
	h.n = len(p)
	return len(p), nil
}

// Subprotocol returns the subprotocol selected in the handshake ("mqtt",
// "mqttv3.1" or "" when none).
func (c *WSConn) Subprotocol() string { return c.subprotocol }

// rawReader reads the peer's bytes: first those buffered before the hijack.
type rawReader WSConn

func (r *rawReader) Read(p []byte) (int, error) {
	if len(r.pre) > 0 {
		n := copy(p, r.pre)
		r.pre = r.pre[n:]
		if len(r.pre) == 0 {
			r.pre = nil
		}
		r.rawN += int64(n)
		return n, nil
	}
	n, err := r.conn.Read(p)
	r.rawN += int64(n)
	return n, err
}

// Read reads the payload of binary frames as one byte stream. It answers
// pings, ignores pongs, answers a close frame and then returns io.EOF. A
// protocol violation (unmasked client frame, reserved bits or opcodes,
// malformed control frame, bad fragmentation) makes it send close 1002 and a
// text frame close 1003 [MQTT-6.0.0-1]; it then returns a *CloseError.
// A deadline expiry leaves the conn usable unless it cut a frame header or a
// control frame in two.
func (c *WSConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.rmu.Lock()
	defer c.rmu.Unlock()
	for {
		if c.rerr != nil {
			c.endInflate() // the decompressor may have hit the error early
			return 0, c.rerr
		}
		if c.inflating {
			n, err := c.readInflated(p)
			if n > 0 || err != nil {
				return n, err
			}
			continue
		}
		if c.remaining > 0 {
			if int64(len(p)) > c.remaining {
				p = p[:c.remaining]
			}
			n, err := (*rawReader)(c).Read(p)
			if n > 0 {
				if c.masked {
					ws.Cipher(p[:n], c.mask, c.maskPos)
					c.maskPos = (c.maskPos + n) & 3
				}
				c.remaining -= int64(n)
			}
			if err != nil && !isTimeout(err) {
				if err == io.EOF {
					err = io.ErrUnexpectedEOF // the frame was cut short
				}
				c.rerr = err
			}
			if n > 0 {
				return n, nil // a sticky error is returned by the next call
			}
			return 0, err
		}
		if err := c.nextFrame(); err != nil {
			return 0, err
		}
	}
}

// nextFrame reads frame headers until one starts data to deliver, handling
// control frames on the way. Called with rmu held and c.remaining == 0.
func (c *WSConn) nextFrame() error {
	for {
		n0 := c.rawN
		h, err := ws.ReadHeaderBuffer((*rawReader)(c), c.hbuf[:])
		if err != nil {
			switch {
			case c.rawN == n0 && isTimeout(err):
				return err // nothing consumed: retry later
			case c.rawN != n0 && err == io.EOF:
				err = io.ErrUnexpectedEOF
			case errors.Is(err, ws.ErrHeaderLengthMSB), errors.Is(err, ws.ErrHeaderLengthUnexpected):
				return c.fail(uint16(ws.StatusProtocolError), err.Error())
			}
			c.rerr = err
			return err
		}
		if err := ws.CheckHeader(h, c.state); err != nil {
			return c.fail(uint16(ws.StatusProtocolError), err.Error())
		}
		compressed := false
		if c.deflate {
			// [RFC 7692 6] RSV1 marks the first frame of a compressed
			// message; RSV2 and RSV3 stay unused.
			r1, r2, r3 := ws.RsvBits(h.Rsv)
			if r2 || r3 || (r1 && h.OpCode != ws.OpBinary && h.OpCode != ws.OpText) {
				return c.fail(uint16(ws.StatusProtocolError), "unexpected RSV bits")
			}
			compressed = r1
		}
		switch h.OpCode {
		case ws.OpText:
			// [MQTT-6.0.0-1] Only binary frames carry MQTT.
			return c.fail(uint16(ws.StatusUnsupportedData), "text frames are not supported: MQTT uses binary frames")
		case ws.OpBinary, ws.OpContinuation:
			if h.Fin {
				c.state = c.state.Clear(ws.StateFragmented)
			} else {
				c.state = c.state.Set(ws.StateFragmented)
			}
			c.remaining, c.masked, c.mask, c.maskPos = h.Length, h.Masked, h.Mask, 0
			c.fin = h.Fin
			if compressed {
				c.startInflate()
			}
			// Read (or inflateSrc) reads the payload, or the next frame
			// when this one is empty.
			return nil
		}
		// Control frame: CheckHeader bounded it at 125 bytes.
		payload := make([]byte, h.Length)
		if _, err := io.ReadFull((*rawReader)(c), payload); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			c.rerr = err
			return err
		}
		if h.Masked {
			ws.Cipher(payload, h.Mask, 0)
		}
		switch h.OpCode {
		case ws.OpPing:
			if err := c.writeControl(ws.OpPong, payload); err != nil {
				c.rerr = err
				return err
			}
		case ws.OpPong:
			// Unsolicited or not, a pong needs no answer (RFC 6455 5.5.3).
		case ws.OpClose:
			return c.readClose(payload)
		}
	}
}

// readClose answers the peer's close frame and makes Read return io.EOF.
func (c *WSConn) readClose(payload []byte) error {
	var code uint16
	switch {
	case len(payload) == 1:
		return c.fail(uint16(ws.StatusProtocolError), "close frame with a 1-byte payload")
	case len(payload) >= 2:
		sc, reason := ws.ParseCloseFrameData(payload)
		if err := checkCloseCode(sc, reason); err != nil {
			if errors.Is(err, ws.ErrProtocolInvalidUTF8) {
				return c.fail(uint16(ws.StatusInvalidFramePayloadData), err.Error())
			}
			return c.fail(uint16(ws.StatusProtocolError), err.Error())
		}
		code = uint16(sc) // echo it (RFC 6455 5.5.1)
		c.peerCode.Store(uint32(code))
	}
	c.wmu.Lock()
	_ = c.writeCloseLocked(code, "")
	c.wmu.Unlock()
	c.rerr = io.EOF
	return io.EOF
}

// checkCloseCode is ws.CheckCloseFrameData, also accepting the codes IANA
// registered after RFC 6455: 1012 service restart, 1013 try again later, 1014
// bad gateway.
func checkCloseCode(code ws.StatusCode, reason string) error {
	if code >= 1012 && code <= 1014 {
		if !utf8.ValidString(reason) {
			return ws.ErrProtocolInvalidUTF8
		}
		return nil
	}
	return ws.CheckCloseFrameData(code, reason)
}

// fail sends a close frame with code and makes Read fail with a *CloseError.
// Called with rmu held.
func (c *WSConn) fail(code uint16, reason string) error {
	c.wmu.Lock()
	_ = c.writeCloseLocked(code, reason)
	c.wmu.Unlock()
	c.rerr = &CloseError{Code: code, Reason: reason}
	return c.rerr
}

// Write sends p as one binary frame (masked on the client side). An empty p
// sends nothing. After an error the conn is unusable: the frame may be half
// written.
func (c *WSConn) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.werr != nil {
		return 0, c.werr
	}
	if c.closeSent {
		return 0, errCloseSent
	}
	var err error
	if c.deflate && len(p) >= deflateMinSize {
		err = c.writeCompressedLocked(p)
	} else {
		err = c.writeFrameLocked(ws.Header{Fin: true, OpCode: ws.OpBinary, Length: int64(len(p))}, p)
	}
	if err != nil {
		c.werr = err
		return 0, err
	}
	return len(p), nil
}

// writeFrameLocked writes one data frame with header h (Length set) and
// payload p, masked on the client side. Called with wmu held.
func (c *WSConn) writeFrameLocked(h ws.Header, p []byte) error {
	if c.client {
		h.Masked, h.Mask = true, ws.NewMask()
		return c.writeMaskedLocked(h, p)
	}
	fs := frameScratches.Get().(*frameScratch)
	_ = ws.WriteHeaderBuffer(&fs.hdr, h, fs.hdr.b[:])
	// Header and payload in one writev on a *net.TCPConn.
	fs.wv[0], fs.wv[1] = fs.hdr.b[:fs.hdr.n], p
	fs.bufs = fs.wv[:]
	_, err := fs.bufs.WriteTo(c.conn)
	fs.wv[0], fs.wv[1], fs.bufs = nil, nil, nil
	frameScratches.Put(fs)
	return err
}

var maskBufPool = sync.Pool{New: func() any { b := make([]byte, 0, 16<<10); return &b }}

// writeMaskedLocked writes one masked frame without changing p: the payload
// is masked chunk by chunk in a pooled buffer.
func (c *WSConn) writeMaskedLocked(h ws.Header, p []byte) error {
	fs := frameScratches.Get().(*frameScratch)
	_ = ws.WriteHeaderBuffer(&fs.hdr, h, fs.hdr.b[:])
	bp := maskBufPool.Get().(*[]byte)
	defer maskBufPool.Put(bp)
	buf := append((*bp)[:0], fs.hdr.b[:fs.hdr.n]...)
	frameScratches.Put(fs)
	for off := 0; ; {
		n := min(len(p)-off, cap(buf)-len(buf))
		start := len(buf)
		buf = append(buf, p[off:off+n]...)
		ws.Cipher(buf[start:], h.Mask, off)
		off += n
		if _, err := c.conn.Write(buf); err != nil {
			return err
		}
		if off == len(p) {
			return nil
		}
		buf = buf[:0]
	}
}

// writeControl sends one control frame unless a close frame was sent.
func (c *WSConn) writeControl(op ws.OpCode, payload []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.closeSent {
		return nil
	}
	return c.writeControlLocked(op, payload)
}

func (c *WSConn) writeControlLocked(op ws.OpCode, payload []byte) error {
	if c.werr != nil {
		return c.werr
	}
	h := ws.Header{Fin: true, OpCode: op, Length: int64(len(payload))}
	if c.client {
		h.Masked, h.Mask = true, ws.NewMask()
		c.werr = c.writeMaskedLocked(h, payload)
		return c.werr
	}
	var frame [ws.MaxHeaderSize + ws.MaxControlFramePayloadSize]byte
	fs := frameScratches.Get().(*frameScratch)
	_ = ws.WriteHeaderBuffer(&fs.hdr, h, fs.hdr.b[:])
	n := copy(frame[:], fs.hdr.b[:fs.hdr.n])
	frameScratches.Put(fs)
	n += copy(frame[n:], payload)
	_, c.werr = c.conn.Write(frame[:n])
	return c.werr
}

// writeCloseLocked sends a close frame once; code 0 sends an empty one.
func (c *WSConn) writeCloseLocked(code uint16, reason string) error {
	if c.closeSent {
		return nil
	}
	c.closeSent = true
	var body [ws.MaxControlFramePayloadSize]byte
	n := 0
	if code != 0 {
		binary.BigEndian.PutUint16(body[:2], code)
		n = 2 + copy(body[2:], truncateUTF8(reason, len(body)-2))
	}
	return c.writeControlLocked(ws.OpClose, body[:n])
}

// truncateUTF8 cuts s to at most n bytes without splitting a rune.
func truncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// Close sends close 1000 (normal closure) and closes the connection.
func (c *WSConn) Close() error { return c.CloseWithCode(uint16(ws.StatusNormalClosure), "") }

// CloseWithCode sends a close frame with code and reason (cut to 123 bytes)
// unless one was already sent, then closes the connection. It waits at most
// closeFrameTimeout for the frame to be written; a Write blocked on a slow
// peer fails by then. It does not wait for the peer's close frame.
// See CloseCodeForReason for the code that fits an MQTT reason code.
func (c *WSConn) CloseWithCode(code uint16, reason string) error {
	if c.closed.Swap(true) {
		return c.conn.Close() // net.ErrClosed
	}
	_ = c.conn.SetWriteDeadline(time.Now().Add(closeFrameTimeout))
	c.wmu.Lock()
	_ = c.writeCloseLocked(code, reason)
	c.wmu.Unlock()
	return c.conn.Close()
}

// PeerCloseCode returns the close code the peer's close frame carried, or 0.
func (c *WSConn) PeerCloseCode() uint16 { return uint16(c.peerCode.Load()) }

// CloseForReason closes with the WebSocket close code that matches an MQTT
// disconnect reason (CloseCodeForReason), so browsers see why.
func (c *WSConn) CloseForReason(mqttReason byte) error {
	return c.CloseWithCode(CloseCodeForReason(mqttReason), "")
}

// LocalAddr returns the local address of the underlying connection.
func (c *WSConn) LocalAddr() net.Addr { return c.conn.LocalAddr() }

// RemoteAddr returns the address set by WithRemoteAddr or
// WSOptions.TrustedProxies, else the underlying connection's.
func (c *WSConn) RemoteAddr() net.Addr {
	if c.remote != nil {
		return c.remote
	}
	return c.conn.RemoteAddr()
}

// SetDeadline sets the underlying connection's deadlines.
func (c *WSConn) SetDeadline(t time.Time) error { return c.conn.SetDeadline(t) }

// SetReadDeadline sets the underlying connection's read deadline.
func (c *WSConn) SetReadDeadline(t time.Time) error { return c.conn.SetReadDeadline(t) }

// SetWriteDeadline sets the underlying connection's write deadline.
func (c *WSConn) SetWriteDeadline(t time.Time) error { return c.conn.SetWriteDeadline(t) }

// NetConn returns the underlying connection.
func (c *WSConn) NetConn() net.Conn { return c.conn }

// IdleConn returns the underlying connection and true when the adapter
// holds no bytes of the peer's that Read has yet to return (none read
// before the hijack, no message being decompressed): a caller may then wait
// for the underlying connection to become readable instead of blocking in
// Read, as a connection poller does.
func (c *WSConn) IdleConn() (net.Conn, bool) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	return c.conn, len(c.pre) == 0 && !c.inflating && c.rerr == nil
}

var _ net.Conn = (*WSConn)(nil)

// SetIdleConn replaces the underlying connection while the adapter is idle
// (IdleConn reported true) and nothing reads or writes: a parked
// connection's socket is then held as a bare descriptor, with a placeholder
// here, until it is reopened and set again.
func (c *WSConn) SetIdleConn(nc net.Conn) {
	c.rmu.Lock()
	c.wmu.Lock()
	c.conn = nc
	c.wmu.Unlock()
	c.rmu.Unlock()
}
